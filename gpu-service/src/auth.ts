/**
 * Service authentication: when a token is configured, every call to the
 * inference service must carry `authorization: Bearer <token>` (compared in
 * constant time); anything else is UNAUTHENTICATED. grpc.health.v1 stays open
 * so that load balancers can probe without the secret.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

const digest = (s: string) => createHash("sha256").update(s).digest();

export function bearerAuth(token: string | undefined, openServices: readonly string[]): Interceptor {
  const expected = token ? digest(token) : undefined;
  return (next) => async (req) => {
    if (!expected || openServices.includes(req.service.typeName)) return next(req);
    const header = req.header.get("authorization") ?? "";
    const match = /^Bearer (.+)$/.exec(header);
    if (!match || !timingSafeEqual(digest(match[1]), expected)) {
      throw new ConnectError(match ? "invalid service token" : "missing bearer token", Code.Unauthenticated);
    }
    return next(req);
  };
}
