/**
 * A stand-in GPU service for the edge's routing tests: the real
 * twigvlm.v1.InferenceService contract served by @connectrpc/connect-node over
 * HTTP/1.1 on loopback, answering from a script chosen by the last user
 * message:
 *
 *   "hello"             Started, Deltas "Hel" "lo" " world", Finished (stop)
 *   "fail-after-first"  Started, Delta "partial", then INTERNAL
 *   "slow"              Started, then a Delta every 100 ms for 10 s unless cancelled
 *   "stall-after-first" Started, Delta "partial", then nothing until cancelled (a stalled shard)
 *   "hang"              nothing at all until cancelled (a shard that accepted and never answers)
 *   "paced"             Started, 40 Deltas `pacedIntervalMs` apart (default 50), Finished
 *   "unavailable"       UNAVAILABLE before any event
 *   "invalid"           INVALID_ARGUMENT before any event
 *   "echo"              one Delta with the request's parameters as JSON
 *
 * `unavailable: true` makes every call fail with UNAVAILABLE (a draining shard).
 * It listens on a loopback port the system picks. GET /_test/state returns what
 * it saw (calls, cancellations, last request); POST /_test/reset clears it.
 */

import { createHash } from "node:crypto";
import http from "node:http";
import { create, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  FinishReason,
  type GenerateEvent,
  GenerateEventSchema,
  type GenerateRequest,
  GenerateRequestSchema,
  InferenceService,
  Mode,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { listenOnFreePort } from "./ports.js";

export interface ScriptedState {
  calls: number;
  /** Calls whose caller went away (the stream was cancelled) before they ended. */
  cancelled: number;
  /** Deltas the last call has sent so far. */
  lastDeltas: number;
  lastAuthorization: string | null;
  /** The Connect timeout the last call came with (its Connect-Timeout-Ms), if any. */
  lastTimeoutMs: number | null;
  lastRequest: unknown;
  lastImageBytes: number;
  lastImageMediaType: string;
  lastImageSha256: string;
}

export interface ScriptedGpuService {
  url: string;
  state: ScriptedState;
  close(): Promise<void>;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

const started = (req: GenerateRequest): GenerateEvent =>
  create(GenerateEventSchema, {
    event: {
      case: "started",
      value: {
        requestId: req.requestId,
        model: req.model,
        mode: Mode.TWIG,
        promptTokens: 70,
        visualTokens: 64,
        keptVisualIndices: [1, 2, 3],
        visualGrids: [{ firstIndex: 0, rows: 8, cols: 8, left: 0, top: -0.25, width: 1, height: 1.5 }],
      },
    },
  });

/** A delta of n tokens, all accepted drafts or all the model's own. */
const deltaEvent = (text: string, n = 1, drafted = false): GenerateEvent =>
  create(GenerateEventSchema, {
    event: {
      case: "delta",
      value: { text, tokenIds: Array.from({ length: n }, (_, i) => 100 + i), acceptedDraftTokens: drafted ? n : 0 },
    },
  });

const finished = (completionTokens: number): GenerateEvent =>
  create(GenerateEventSchema, {
    event: {
      case: "finished",
      value: {
        finishReason: FinishReason.STOP,
        usage: { promptTokens: 70, completionTokens, totalTokens: 70 + completionTokens },
        stats: {
          visualTokens: 64,
          visualTokensKept: 3,
          prefillMs: 12.5,
          timeToFirstTokenMs: 13,
          decodeMs: 4,
          tokensPerSecond: 250,
          draftedTokens: 4,
          acceptedTokens: 2,
          acceptanceRate: 0.5,
          verifications: 2,
          meanAcceptedLength: 1,
          acceptedLengthHistogram: [1, 0, 1],
        },
      },
    },
  });

const freshState = (): ScriptedState => ({
  calls: 0,
  cancelled: 0,
  lastDeltas: 0,
  lastAuthorization: null,
  lastTimeoutMs: null,
  lastRequest: null,
  lastImageBytes: 0,
  lastImageMediaType: "",
  lastImageSha256: "",
});

export async function startScriptedGpuService(
  opts: { unavailable?: boolean; pacedIntervalMs?: number } = {},
): Promise<ScriptedGpuService> {
  const state = freshState();
  const routes = (router: ConnectRouter) =>
    router.service(InferenceService, {
      listModels: () => ({ models: [{ name: "scripted", isDefault: true }] }),
      async *generate(req, ctx) {
        state.calls++;
        state.lastDeltas = 0;
        const delta = (text: string, n = 1, drafted = false) => {
          state.lastDeltas++;
          return deltaEvent(text, n, drafted);
        };
        state.lastAuthorization = ctx.requestHeader.get("authorization");
        state.lastTimeoutMs = ctx.timeoutMs() ?? null;
        const json = toJson(GenerateRequestSchema, req) as Record<string, unknown>;
        delete json.image;
        state.lastRequest = json;
        const img = req.image?.source.case === "data" ? req.image.source.value : new Uint8Array();
        state.lastImageBytes = img.length;
        state.lastImageMediaType = req.image?.mediaType ?? "";
        state.lastImageSha256 = createHash("sha256").update(img).digest("hex");
        ctx.signal.addEventListener("abort", () => state.cancelled++);
        if (opts.unavailable) throw new ConnectError("draining", Code.Unavailable);
        const msgs = req.input.case === "conversation" ? req.input.value.messages : [];
        const script = msgs.at(-1)?.content ?? "";
        switch (script) {
          case "hello":
            yield started(req);
            yield delta("Hel");
            yield delta("lo", 2, true);
            yield delta(" world");
            yield finished(4);
            return;
          case "fail-after-first":
            yield started(req);
            yield delta("partial");
            throw new ConnectError("the engine crashed", Code.Internal);
          case "slow":
            yield started(req);
            for (let i = 0; i < 100; i++) {
              await sleep(100, ctx.signal);
              yield delta(`${i} `);
            }
            yield finished(100);
            return;
          case "paced":
            yield started(req);
            for (let i = 0; i < 40; i++) {
              await sleep(opts.pacedIntervalMs ?? 50, ctx.signal);
              yield delta(`${i} `);
            }
            yield finished(40);
            return;
          case "stall-after-first":
            yield started(req);
            yield delta("partial");
            await sleep(3_600_000, ctx.signal);
            return;
          case "hang":
            await sleep(3_600_000, ctx.signal);
            return;
          case "unavailable":
            throw new ConnectError("no worker free", Code.Unavailable);
          case "invalid":
            throw new ConnectError("max_tokens 99999 exceeds the context length 512", Code.InvalidArgument);
          default:
            yield started(req);
            yield delta(JSON.stringify(state.lastRequest));
            yield finished(1);
        }
      },
    });
  const handler = connectNodeAdapter({ routes });
  const server = http.createServer((req, res) => {
    if (req.url === "/_test/state") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(state));
    } else if (req.url === "/_test/reset") {
      Object.assign(state, freshState());
      res.writeHead(204).end();
    } else handler(req, res);
  });
  const port = await listenOnFreePort(server);
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
