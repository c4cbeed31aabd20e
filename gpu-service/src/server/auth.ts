/**
 * Service authentication: when a token is configured, every call to the
 * inference service must carry `authorization: Bearer <token>` (compared in
 * constant time); anything else is UNAUTHENTICATED. grpc.health.v1 stays open
 * so that load balancers can probe without the secret.
 *
 * The check reads the request line and headers only, so the server runs it
 * before the request's body is read: an unauthenticated body is never
 * decompressed or parsed.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** A request's path and headers → the refusal, or undefined when it may go on. */
export type HeaderCheck = (path: string, headers: IncomingHttpHeaders) => ConnectError | undefined;

/** The bearer check for `token` (no check when unset); paths of `openServices` ("/<service>/<method>") pass. */
export function bearerCheck(token: string | undefined, openServices: readonly string[]): HeaderCheck {
  const expected = token ? digest(token) : undefined;
  return (path, headers) => {
    if (!expected) return undefined;
    const service = /^\/([^/]+)\//.exec(path)?.[1];
    if (service !== undefined && openServices.includes(service)) return undefined;
    const match = /^Bearer (.+)$/.exec(headers.authorization ?? "");
    if (match && timingSafeEqual(digest(match[1]), expected)) return undefined;
    return new ConnectError(match ? "invalid service token" : "missing bearer token", Code.Unauthenticated);
  };
}
