/**
 * What callers see of errors. Two corrections to what would reach them:
 *
 * - connect-es reports a binary request message it cannot parse as INTERNAL
 *   ("parse binary: ..."), though the fault is the caller's (its JSON twin is
 *   already INVALID_ARGUMENT): for streaming calls, where the message is parsed
 *   inside the interceptor chain, the answer is INVALID_ARGUMENT. Unary calls
 *   parse before any interceptor runs and keep connect-es's code.
 * - An INTERNAL or UNKNOWN error (a bug, an engine failure) is the service's
 *   business: its message may name files, tensors or code. The caller gets a
 *   generic message with the request id; the details go to the log under it.
 */
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "./log.js";

/** Errors already made fit for callers (so that an outer layer leaves them be). */
const forCallers = new WeakSet<ConnectError>();

/**
 * `err` as a caller may see it: itself, or for INTERNAL and UNKNOWN a generic
 * error naming `requestId` (the caller must log the details under that id).
 */
export function callerError(err: unknown, requestId: string): ConnectError {
  const e = ConnectError.from(err);
  if (forCallers.has(e) || (e.code !== Code.Internal && e.code !== Code.Unknown)) return e;
  const generic = new ConnectError(
    `internal error; the service logged the details under request id ${requestId}`,
    Code.Internal,
  );
  forCallers.add(generic);
  return generic;
}

/** The message of an error and of its cause, for the log. */
export function errorDetails(err: unknown): string {
  const e = ConnectError.from(err);
  const cause = e.cause instanceof Error && e.cause.message !== e.rawMessage ? ` (${e.cause.message})` : "";
  return `${e.rawMessage}${cause}`;
}

/** The interceptor that applies both corrections to every call (Generate's log interceptor names its own request id). */
export function callerErrors(log: Logger): Interceptor {
  const convert = (err: unknown): unknown => {
    const e = ConnectError.from(err);
    if (e.code === Code.Internal && e.rawMessage.startsWith("parse binary:"))
      return new ConnectError(`the request message could not be parsed (${e.rawMessage})`, Code.InvalidArgument);
    if (forCallers.has(e) || (e.code !== Code.Internal && e.code !== Code.Unknown)) return err;
    const requestId = randomUUID();
    log.error({ requestId, code: Code[e.code], error: errorDetails(e) }, "internal error");
    return callerError(e, requestId);
  };
  async function* converted<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
    try {
      yield* messages;
    } catch (err) {
      throw convert(err);
    }
  }
  return (next) => async (req) => {
    try {
      const res = await next(req);
      return res.stream ? { ...res, message: converted(res.message) } : res;
    } catch (err) {
      throw convert(err);
    }
  };
}
