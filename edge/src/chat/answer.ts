/**
 * Turns an opened Generate stream into the client's answer: one
 * chat.completion object, or SSE chunks written as each delta arrives. Both
 * record what was produced (Progress) and call `settle` once at the end,
 * whether the stream finished, failed or the client went away.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Finished, GenerateEvent, Started } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import type { Context } from "hono";
import type { AppEnv } from "../app-types.js";
import { apiErrorOf, type OpenedGeneration } from "../gpu/router.js";
import { ApiError, toApiError } from "../http/errors.js";
import {
  type CompletionIds,
  chunk,
  completion,
  finishReasonOf,
  twigDelta,
  twigStarted,
  twigStats,
  usageChunk,
  usageOf,
} from "./openai-shape.js";
import type { ChatRequest } from "./request.js";
import { SSE_DONE, SSE_HEADERS, SSE_HEARTBEAT, SSE_HEARTBEAT_MS, sseError, sseEvent } from "./sse.js";

/** What a generation produced so far, for settling the tenant's budget. */
export interface Progress {
  started?: Started;
  finished?: Finished;
  completionTokens: number;
}

/** Tokens to charge: the service's usage when it finished, what was produced so far otherwise. */
export const usedTokens = (p: Progress) =>
  p.finished?.usage?.totalTokens ?? (p.started ? p.started.promptTokens + p.completionTokens : 0);

function observe(ev: GenerateEvent, p: Progress): string {
  switch (ev.event.case) {
    case "started":
      p.started = ev.event.value;
      return "";
    case "delta":
      p.completionTokens += ev.event.value.tokenIds.length;
      return ev.event.value.text;
    case "finished":
      p.finished = ev.event.value;
      return "";
    default:
      return "";
  }
}

/** All events of an opened generation, the first one included. */
async function* eventsOf(g: OpenedGeneration): AsyncGenerator<GenerateEvent> {
  let ended = false;
  try {
    yield g.first;
    while (true) {
      const r = await g.rest.next();
      if (r.done) {
        ended = true;
        return;
      }
      yield r.value;
    }
  } catch (err) {
    ended = true;
    throw err;
  } finally {
    // left early by the reader: hang up on the shard, and end the call's count in the shard pool
    if (!ended) await g.rest.return?.();
  }
}

const midStreamError = (err: unknown) => {
  const e = err instanceof ApiError ? err : apiErrorOf(ConnectError.from(err));
  const mid = new ApiError(e.status, `the generation failed after it started: ${e.message}`, e.code);
  return e.detail ? mid.withDetail(e.detail) : mid;
};

export async function whole(
  c: Context<AppEnv>,
  ids: CompletionIds,
  g: OpenedGeneration,
  p: Progress,
  settle: () => void,
): Promise<Response> {
  let text = "";
  try {
    for await (const ev of eventsOf(g)) text += observe(ev, p);
  } catch (err) {
    throw midStreamError(err);
  } finally {
    settle();
  }
  if (!p.finished)
    throw new ApiError(500, "the GPU service failed", "gpu_error").withDetail("the stream ended without Finished");
  return c.json(completion(ids, text, p.started, p.finished));
}

export function streamed(
  c: Context<AppEnv>,
  req: ChatRequest,
  ids: CompletionIds,
  g: OpenedGeneration,
  p: Progress,
  abort: AbortController,
  settle: () => void,
): Response {
  let closed = false;
  let quiet: ReturnType<typeof setTimeout> | undefined;
  const hush = () => {
    if (quiet !== undefined) clearTimeout(quiet);
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      // every write, the heartbeat included, is where a client that went away is noticed
      const send = (bytes: Uint8Array) => {
        if (closed) return;
        controller.enqueue(bytes);
        hush();
        quiet = setTimeout(() => send(SSE_HEARTBEAT), SSE_HEARTBEAT_MS);
      };
      // the role chunk carries the "started" event's visual tokens (the first event; anything else is a fault)
      let roleSent = false;
      const sendRole = (started?: Started) => {
        if (roleSent) return;
        roleSent = true;
        const extra = started ? { twigvlm: twigStarted(started) } : {};
        send(sseEvent(chunk(ids, { role: "assistant", content: "" }, null, req.includeUsage, extra)));
      };
      const pump = async () => {
        try {
          for await (const ev of eventsOf(g)) {
            const text = observe(ev, p);
            sendRole(ev.event.case === "started" ? ev.event.value : undefined);
            if (ev.event.case === "delta" && (text || ev.event.value.tokenIds.length > 0))
              send(
                sseEvent(chunk(ids, { content: text }, null, req.includeUsage, { twigvlm: twigDelta(ev.event.value) })),
              );
          }
          sendRole();
          if (!p.finished) throw new ConnectError("the GPU service ended the stream without finishing", Code.Internal);
          const f = p.finished;
          send(
            sseEvent(
              chunk(ids, {}, finishReasonOf(f.finishReason), req.includeUsage, { twigvlm: twigStats(p.started, f) }),
            ),
          );
          if (req.includeUsage) send(sseEvent(usageChunk(ids, usageOf(f))));
          send(SSE_DONE);
        } catch (err) {
          if (!abort.signal.aborted) {
            const requestId = c.get("requestId");
            send(sseError(toApiError(midStreamError(err), requestId).body(requestId)));
          }
        } finally {
          hush();
          settle();
          if (!closed) {
            closed = true;
            controller.close();
          }
        }
      };
      c.executionCtx.waitUntil(pump());
    },
    cancel() {
      closed = true;
      hush();
      abort.abort(new Error("the client went away"));
    },
  });
  return c.body(body, 200, SSE_HEADERS);
}
