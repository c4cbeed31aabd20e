/**
 * Opens a Generate stream on one of a model's GPU services. Shards are tried in
 * tryOrder(); an attempt that fails before its first event (connection
 * refused, UNAVAILABLE, a full queue, ...) moves on to the next shard. Once an
 * event has arrived the stream is committed to that shard: a later error is
 * the caller's to report. When no shard answers: 503 with Retry-After.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { GenerateEvent, GenerateRequest } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { ApiError } from "../http/errors.js";
import { gpuClients } from "./client.js";
import { markDown, markUp, tryOrder } from "./shard-health.js";

/** Seconds a client is told to wait when no shard is reachable. */
export const RETRY_AFTER_S = 5;

export interface OpenedGeneration {
  url: string;
  first: GenerateEvent;
  /** The events after `first`. */
  rest: AsyncIterator<GenerateEvent>;
}

/** Failures of the connection or of the shard itself: another shard may do better. */
const FAILOVER = new Set([
  Code.Unavailable,
  Code.Unknown,
  Code.ResourceExhausted,
  Code.Unauthenticated,
  Code.Unimplemented,
]);
/** Failures that say the shard cannot be reached at all. */
const UNREACHABLE = new Set([Code.Unavailable, Code.Unknown]);

/** The HTTP error for a GPU service error that is the request's own fault or final. */
export function apiErrorOf(err: ConnectError): ApiError {
  switch (err.code) {
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return new ApiError(400, err.rawMessage, "invalid_request_error");
    case Code.DeadlineExceeded:
      return new ApiError(503, `the GPU service ran out of time: ${err.rawMessage}`, "deadline_exceeded", null, {
        "retry-after": String(RETRY_AFTER_S),
      });
    case Code.ResourceExhausted:
    case Code.Unavailable:
      return new ApiError(
        503,
        `the GPU service is overloaded or unavailable: ${err.rawMessage}`,
        "gpu_unavailable",
        null,
        {
          "retry-after": String(RETRY_AFTER_S),
        },
      );
    default:
      return new ApiError(500, `the GPU service failed: ${err.rawMessage}`, "gpu_error");
  }
}

export async function openGeneration(
  model: string,
  urls: readonly string[],
  req: GenerateRequest,
  opts: { token?: string; signal: AbortSignal },
): Promise<OpenedGeneration> {
  const failures: string[] = [];
  for (const url of tryOrder(urls)) {
    if (opts.signal.aborted) break;
    const stream = gpuClients(url, opts.token).inference.generate(req, { signal: opts.signal });
    const it = stream[Symbol.asyncIterator]();
    try {
      const r = await it.next();
      if (r.done) throw new ConnectError("the GPU service ended the stream without an event", Code.Unavailable);
      markUp(url);
      return { url, first: r.value, rest: it };
    } catch (e) {
      const err = ConnectError.from(e);
      if (opts.signal.aborted || !FAILOVER.has(err.code)) throw apiErrorOf(err);
      if (UNREACHABLE.has(err.code)) markDown(url);
      failures.push(`${url}: ${err.message}`);
      console.warn(
        `request ${req.requestId}: GPU service ${url} failed before the first token (${err.message}); trying the next`,
      );
    }
  }
  if (opts.signal.aborted) throw new ApiError(400, "the client went away", "client_closed");
  throw new ApiError(
    503,
    `no GPU service for model ${model} is reachable right now; retry later (${failures.length} tried)`,
    "gpu_unavailable",
    null,
    { "retry-after": String(RETRY_AFTER_S) },
  );
}
