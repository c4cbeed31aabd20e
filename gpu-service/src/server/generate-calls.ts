/**
 * Interceptors around `Generate`, the one streaming method whose calls the service logs, counts and
 * measures. Connect's interceptors are an onion: the first in the server's list is the outermost layer,
 * and each wraps the call (`next`) of the layers inside it. A server-streaming call reaches them before its
 * request message is read: the request arrives as an iterable that the handler reads (and connect-node
 * parses) only after every interceptor has passed it on, and the answer leaves as an iterable of events
 * that ends when the stream ends. `generateInterceptor` wraps both: it hands a layer the request as it is
 * parsed (before the handler sees it), each event on its way out, and the call's end once, whether the
 * stream finished, failed or its caller went away.
 *
 * A request that cannot be parsed never reaches a layer: it has no call to log, count or measure (the
 * outermost interceptor, request-errors.ts, still answers it as the caller's fault).
 *
 * The service token is not one of these layers: connect-node reads, decompresses and parses a unary
 * request before any interceptor runs, and the token must be checked before a body is read, so the server
 * checks it from the headers in front of connect-node (listen.ts, auth.ts).
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type GenerateEvent,
  type GenerateRequest,
  InferenceService,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";

/** What one layer does with one Generate call. */
export interface GenerateCall {
  /** Each event, as it leaves for the caller. */
  event?(event: GenerateEvent): void;
  /**
   * The call's end: `error` undefined when the stream finished, else why not (CANCELED when the caller
   * went away). Returns the error the caller gets instead, if any.
   */
  end?(error: ConnectError | undefined): ConnectError | undefined;
}

/**
 * An interceptor of Generate only: `begin` runs with each request as it is parsed, before the handler
 * sees it (it may fill in fields), and says what to do with the call's events and end.
 *
 * @example
 * let inFlight = 0;
 * const counting = generateInterceptor(() => {
 *   inFlight++;
 *   return { end: () => void inFlight-- };
 * });
 */
export function generateInterceptor(
  begin: (request: GenerateRequest, signal: AbortSignal) => GenerateCall,
): Interceptor {
  return (next) => async (req) => {
    if (!req.stream || req.method !== InferenceService.method.generate) return next(req);
    let ended = false;
    let call: GenerateCall | undefined;
    const end = (err: unknown): ConnectError | undefined => {
      const error = err === undefined ? undefined : ConnectError.from(err);
      if (ended || !call) return error;
      ended = true;
      req.signal.removeEventListener("abort", goneAway);
      return call.end?.(error) ?? error;
    };
    // a stream whose caller has gone may never be resumed: its end is the abort (an error is built only
    // for a call not yet ended: building one captures a stack, and every stream's cleanup comes here)
    const goneAway = () => {
      if (!ended) end(new ConnectError("the caller went away", Code.Canceled));
    };
    async function* parsed(requests: AsyncIterable<GenerateRequest>) {
      for await (const request of requests) {
        call = begin(request, req.signal);
        req.signal.addEventListener("abort", goneAway, { once: true });
        yield request;
      }
    }
    async function* events(stream: AsyncIterable<GenerateEvent>) {
      try {
        for await (const event of stream) {
          call?.event?.(event);
          yield event;
        }
        end(undefined);
      } catch (err) {
        throw end(err);
      } finally {
        goneAway(); // a no-op after the end; else the stream was abandoned
      }
    }
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next({ ...req, message: parsed(req.message as AsyncIterable<GenerateRequest>) });
    } catch (err) {
      throw end(err) ?? err;
    }
    if (!res.stream) return res;
    return { ...res, message: events(res.message as AsyncIterable<GenerateEvent>) };
  };
}
