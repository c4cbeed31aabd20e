/**
 * connect-es reports a binary request message it cannot parse as INTERNAL
 * ("parse binary: ..."), though the fault is the caller's (its JSON twin is
 * already INVALID_ARGUMENT). For streaming calls, where the message is parsed
 * inside the interceptor chain, this one answers INVALID_ARGUMENT instead.
 * Unary calls parse before any interceptor runs and keep connect-es's code.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

export const unparsableRequests: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.Internal && e.rawMessage.startsWith("parse binary:"))
      throw new ConnectError(`the request message could not be parsed (${e.rawMessage})`, Code.InvalidArgument);
    throw err;
  }
};
