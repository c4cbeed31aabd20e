/**
 * Opens a Generate stream on one of a model's GPU services. Shards are tried in
 * the order the isolate's shard pool gives (shard-pool.ts: a half-open shard's
 * trial, then least outstanding requests, then shards whose breaker is open);
 * an attempt that fails before its first event (connection refused,
 * UNAVAILABLE, a full queue, no answer within GPU_CONNECT_TIMEOUT_MS) moves on
 * to the next shard. Once an event has arrived the stream is committed to that
 * shard: a later error is the caller's to report, and a shard that then sends
 * nothing for GPU_STALL_TIMEOUT_MS ends it as stalled. The whole call, failover
 * included, has GPU_DEADLINE_MS; each attempt passes what is left to the shard
 * as its deadline. When no shard answers: 503 with Retry-After.
 *
 * What the pool learns: the first event closes a shard's breaker; a shard that
 * cannot be reached, refuses the edge, stays silent past the connect timeout,
 * stalls or drops the connection mid-stream opens it. A call counts as
 * outstanding on its shard from its attempt until its stream ends.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { GenerateEvent, GenerateRequest } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { ApiError } from "../http/errors.js";
import { gpuClients } from "./client.js";
import { type ShardPoolOptions, shardPool } from "./shard-pool.js";
import { Watchdog } from "./watchdog.js";

/** Seconds a client is told to wait when no shard is reachable. */
export const RETRY_AFTER_S = 5;

export interface OpenedGeneration {
  url: string;
  first: GenerateEvent;
  /** The events after `first`; a stalled shard makes `next()` throw a 503 `gpu_stalled`. */
  rest: AsyncIterator<GenerateEvent>;
}

/** Time limits of one GPU call (see config/settings.ts). */
export interface CallLimits {
  deadlineMs: number;
  connectTimeoutMs: number;
  stallTimeoutMs: number;
}

/** Failures of the connection or of the shard itself: another shard may do better. */
const FAILOVER = new Set([
  Code.Unavailable,
  Code.Unknown,
  Code.ResourceExhausted,
  Code.Unauthenticated,
  Code.Unimplemented,
]);
/** Failures that open the shard's breaker: it cannot be reached, is draining, or refuses the edge itself. */
const BREAKS = new Set([Code.Unavailable, Code.Unknown, Code.Unauthenticated, Code.Unimplemented]);
/** Failures mid-stream that say the shard (or the way to it) went away. */
const DROPPED = new Set([Code.Unavailable, Code.Unknown]);

const retryLater = { "retry-after": String(RETRY_AFTER_S) };

/** The HTTP error for a GPU service error that is the request's own fault or final (internals only in `detail`). */
export function apiErrorOf(err: ConnectError): ApiError {
  const detail = `[${Code[err.code]}] ${err.rawMessage}`;
  switch (err.code) {
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return new ApiError(400, err.rawMessage, "invalid_request_error");
    case Code.DeadlineExceeded:
      return new ApiError(
        503,
        "the GPU service ran out of time for this request; retry later",
        "deadline_exceeded",
        null,
        retryLater,
      ).withDetail(detail);
    case Code.ResourceExhausted:
    case Code.Unavailable:
      return new ApiError(
        503,
        "the GPU service is overloaded or unavailable; retry later",
        "gpu_unavailable",
        null,
        retryLater,
      ).withDetail(detail);
    default:
      return new ApiError(500, "the GPU service failed", "gpu_error").withDetail(detail);
  }
}

/** The 503 for a shard that went silent in the middle of a generation. */
const stalled = (ms: number) =>
  new ApiError(
    503,
    `the GPU service stopped sending (nothing for ${ms} ms); retry later`,
    "gpu_stalled",
    null,
    retryLater,
  );

/** The events after the first, each awaited under the stall watchdog; the end of the stream ends the call's count. */
function guarded(
  it: AsyncIterator<GenerateEvent>,
  call: { url: string; watchdog: Watchdog; stallMs: number; signal: AbortSignal; end: () => void },
): AsyncIterator<GenerateEvent> {
  const { watchdog, stallMs } = call;
  return {
    async next() {
      watchdog.arm(stallMs, "stall");
      try {
        const r = await it.next();
        if (r.done) call.end();
        return r;
      } catch (err) {
        call.end();
        if (!call.signal.aborted && (watchdog.fired || DROPPED.has(ConnectError.from(err).code)))
          shardPool.failed(call.url);
        if (watchdog.fired) throw stalled(stallMs).withDetail(String(err));
        throw err;
      } finally {
        watchdog.disarm();
      }
    },
    async return() {
      watchdog.disarm();
      call.end();
      return (await it.return?.()) ?? { done: true, value: undefined };
    },
  };
}

export async function openGeneration(
  model: string,
  urls: readonly string[],
  req: GenerateRequest,
  opts: { token?: string; signal: AbortSignal; limits: CallLimits; cooldown: ShardPoolOptions },
): Promise<OpenedGeneration> {
  const deadlineAt = Date.now() + opts.limits.deadlineMs;
  const failures: string[] = [];
  shardPool.configure(opts.cooldown);
  const order = shardPool.order(urls);
  let tried = 0;
  for (const url of order) {
    const remaining = deadlineAt - Date.now();
    if (opts.signal.aborted || remaining <= 0) break;
    tried++;
    const end = shardPool.begin(url);
    const watchdog = new Watchdog();
    req.deadlineMs = remaining;
    const stream = gpuClients(url, opts.token).inference.generate(req, {
      signal: AbortSignal.any([opts.signal, watchdog.signal]),
      timeoutMs: remaining,
    });
    const it = stream[Symbol.asyncIterator]();
    watchdog.arm(Math.min(opts.limits.connectTimeoutMs, remaining), "connect");
    try {
      const r = await it.next();
      watchdog.disarm();
      if (r.done) throw new ConnectError("the GPU service ended the stream without an event", Code.Unavailable);
      shardPool.succeeded(url);
      const call = { url, watchdog, stallMs: opts.limits.stallTimeoutMs, signal: opts.signal, end };
      return { url, first: r.value, rest: guarded(it, call) };
    } catch (e) {
      watchdog.disarm();
      end();
      if (opts.signal.aborted) {
        shardPool.abandoned(url);
        break;
      }
      let reason: string;
      if (watchdog.fired) {
        shardPool.failed(url);
        reason = `no answer within ${watchdog.fired.ms} ms`;
      } else {
        const err = ConnectError.from(e);
        if (err.code === Code.DeadlineExceeded) {
          shardPool.abandoned(url);
          throw apiErrorOf(err);
        }
        // the shard answered: the request's own fault, or a full queue
        if (!BREAKS.has(err.code)) shardPool.succeeded(url);
        if (!FAILOVER.has(err.code)) throw apiErrorOf(err);
        if (BREAKS.has(err.code)) shardPool.failed(url);
        reason = err.message;
      }
      failures.push(`${url}: ${reason}`);
      console.warn(
        `request ${req.requestId}: GPU service ${url} failed before the first token (${reason}); trying the next`,
      );
    }
  }
  // a trial booked by order() but never sent: the next request may try the shard
  if (tried === 0 && order.length > 0) shardPool.abandoned(order[0]);
  if (opts.signal.aborted) throw new ApiError(400, "the client went away", "client_closed");
  if (deadlineAt - Date.now() <= 0)
    throw new ApiError(
      503,
      "the GPU service ran out of time for this request; retry later",
      "deadline_exceeded",
      null,
      retryLater,
    ).withDetail(failures.join("; "));
  throw new ApiError(
    503,
    `no GPU service for model ${model} is reachable right now; retry later (${failures.length} tried)`,
    "gpu_unavailable",
    null,
    retryLater,
  ).withDetail(failures.join("; "));
}
