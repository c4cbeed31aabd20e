/**
 * Every response carries `x-request-id`: the caller's own when it sent a sane
 * one (letters, digits, `.`, `_`, `-`; at most 128), otherwise a fresh UUID.
 * The same id goes to the GPU service with the request.
 */
import type { MiddlewareHandler } from "hono";

const SANE = /^[A-Za-z0-9._-]{1,128}$/;

export function requestId(): MiddlewareHandler<{ Variables: { requestId: string } }> {
  return async (c, next) => {
    const given = c.req.header("x-request-id");
    const id = given && SANE.test(given) ? given : crypto.randomUUID();
    c.set("requestId", id);
    c.header("x-request-id", id);
    await next();
    c.res.headers.set("x-request-id", id);
  };
}
