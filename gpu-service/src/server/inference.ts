/**
 * twigvlm.v1.InferenceService: ListModels from the registry; Generate plans
 * the request (validate.ts), waits for a worker in the model's scheduler, and streams the
 * engine's events as Started, Delta... and one Finished.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  FinishReason,
  type GenerateEvent,
  GenerateEventSchema,
  type GenerateRequest,
  GridSource,
  type InferenceService,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import type { Engine } from "../engine/engine.js";
import type { EngineEvent, VisualGrid } from "../engine/events.js";
import { metrics } from "./metrics.js";
import type { ModelEntry } from "./registry.js";
import type { Scheduler } from "./scheduler.js";
import { DEFAULT_LIMITS, PROTO_MODE_OF, type ValidationLimits, validateRequest } from "./validate.js";

export interface ServedModel {
  entry: ModelEntry;
  /** Set once the model is loaded and warmed up. */
  engine?: Engine;
  scheduler?: Scheduler;
}

export interface InferenceDeps {
  models: () => ServedModel[];
  defaultModel: string;
  /** True while the service drains: new work is refused. */
  draining: () => boolean;
  /** Size limits of requests (images); DEFAULT_LIMITS when absent. */
  limits?: ValidationLimits;
}

const FINISH_OF = { stop: FinishReason.STOP, length: FinishReason.LENGTH, stop_sequence: FinishReason.STOP_SEQUENCE };

const GRID_SOURCE_OF = { base: GridSource.BASE, tile: GridSource.TILE, frame: GridSource.FRAME };

/** An engine grid on the wire: row_stride 0 and source unspecified where the grid is a plain picture's. */
function gridOnWire(g: VisualGrid) {
  const { rowStride, source, index, ...rect } = g;
  return {
    ...rect,
    rowStride: rowStride ?? 0,
    source: source ? GRID_SOURCE_OF[source] : GridSource.UNSPECIFIED,
    index: index ?? 0,
  };
}

/** A push-to-pull queue: engine callbacks in, an async iterator out. */
class EventQueue<T> {
  private items: T[] = [];
  private wake?: () => void;
  private ended = false;
  private error?: unknown;
  push(item: T): void {
    this.items.push(item);
    this.wake?.();
  }
  end(error?: unknown): void {
    this.ended = true;
    this.error = error;
    this.wake?.();
  }
  async *drain(): AsyncGenerator<T> {
    while (true) {
      while (this.items.length > 0) yield this.items.shift() as T;
      if (this.ended) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = undefined;
    }
  }
}

function toConnectError(err: unknown, deadline: AbortSignal | undefined): ConnectError {
  if (err instanceof ConnectError) return err;
  const e = err as Error;
  if (e?.name === "InvalidRequestError") return new ConnectError(e.message, Code.InvalidArgument);
  if (e?.name === "EngineWorkerExitedError")
    return new ConnectError(`${e.message} during the request; retry (on another replica)`, Code.Unavailable);
  if (deadline?.aborted) return new ConnectError("the request's deadline passed", Code.DeadlineExceeded);
  if (e?.name === "AbortError" || e?.name === "TimeoutError")
    return new ConnectError("the request was cancelled", Code.Canceled);
  return new ConnectError(`generation failed: ${e?.message ?? String(err)}`, Code.Internal);
}

/** The service, with Generate typed as what it really yields (whole messages). */
export type InferenceImpl = ServiceImpl<typeof InferenceService> & {
  generate(req: GenerateRequest, ctx: HandlerContext): AsyncGenerator<GenerateEvent>;
};

export function inferenceService(deps: InferenceDeps): InferenceImpl {
  return {
    listModels() {
      return {
        models: deps.models().map(({ entry: m, engine }) => ({
          name: m.name,
          architecture: m.architecture,
          visualTokens: engine?.info.visualTokens ?? m.visualTokens,
          numLayers: m.numLayers,
          contextLength: m.contextLength,
          hasTwig: m.twig !== undefined,
          twigK: m.twig?.k ?? 0,
          twigT: m.twig?.t ?? 0,
          finalWipeLayer: m.twig?.finalWipeLayer ?? 0,
          defaultRetainBudget: engine?.info.twig?.defaultRetainBudget ?? 0,
          defaultPrunedFraction: engine?.info.twig?.defaultPrunedFraction ?? 0,
          isDefault: m.name === deps.defaultModel,
          videoTokensPerFrame: engine?.info.video?.tokensPerFrame ?? 0,
          maxVideoFrames: engine?.info.video?.maxFrames ?? 0,
          visualTokensVary: engine?.info.visualTokensVary ?? false,
        })),
      };
    },

    async *generate(req, ctx) {
      if (deps.draining())
        throw new ConnectError("the service is shutting down; retry on another replica", Code.Unavailable);
      const name = req.model || deps.defaultModel;
      const served = deps.models().find((m) => m.entry.name === name);
      if (!served) {
        const names = deps.models().map((m) => m.entry.name);
        throw new ConnectError(
          `unknown model "${name}"; available: ${names.join(", ") || "none"}`,
          Code.InvalidArgument,
        );
      }
      if (!served.engine || !served.scheduler)
        throw new ConnectError(`model "${name}" is still loading`, Code.Unavailable);
      const limits = deps.limits ?? DEFAULT_LIMITS;
      const params = await validateRequest(req, served.engine, limits);
      const requestId = req.requestId || randomUUID();
      const deadline = req.deadlineMs > 0 ? AbortSignal.timeout(req.deadlineMs) : undefined;
      const signal = deadline ? AbortSignal.any([ctx.signal, deadline]) : ctx.signal;
      const queue = new EventQueue<GenerateEvent>();
      const toEvent = (e: EngineEvent): GenerateEvent => {
        switch (e.type) {
          case "started":
            return create(GenerateEventSchema, {
              event: {
                case: "started",
                value: {
                  requestId,
                  model: name,
                  mode: PROTO_MODE_OF[params.plan.mode],
                  promptTokens: e.promptTokens,
                  visualTokens: e.visualTokens,
                  keptVisualIndices: e.keptVisualIndices,
                  visualGrids: e.visualGrids.map(gridOnWire),
                  videoFrames: e.videoFrames ?? [],
                },
              },
            });
          case "delta":
            return create(GenerateEventSchema, {
              event: {
                case: "delta",
                value: { text: e.text, tokenIds: e.tokenIds, acceptedDraftTokens: e.acceptedDraftTokens },
              },
            });
          case "finished":
            return create(GenerateEventSchema, {
              event: {
                case: "finished",
                value: {
                  finishReason: FINISH_OF[e.finishReason],
                  usage: {
                    promptTokens: e.usage.promptTokens,
                    completionTokens: e.usage.completionTokens,
                    totalTokens: e.usage.promptTokens + e.usage.completionTokens,
                  },
                  stats: { ...e.stats, queueMs: queueMs },
                },
              },
            });
        }
      };
      let queueMs = 0;
      let finished: EngineEvent | undefined;
      const labels = { model: name };
      const t0 = performance.now();
      let lastDelta: number | undefined;
      const observe = (e: EngineEvent) => {
        const now = performance.now();
        if (e.type === "delta") {
          if (lastDelta === undefined) metrics.ttft.observe(labels, (now - t0) / 1000);
          else metrics.interToken.observe(labels, (now - lastDelta) / 1000);
          lastDelta = now;
        } else if (e.type === "started") {
          metrics.promptTokens.inc(labels, e.promptTokens);
          metrics.visualKept.inc(labels, e.keptVisualIndices.length);
          metrics.visualPruned.inc(labels, e.visualTokens - e.keptVisualIndices.length);
        } else {
          metrics.generatedTokens.inc(labels, e.usage.completionTokens);
          metrics.draftedTokens.inc(labels, e.stats.draftedTokens);
          metrics.acceptedTokens.inc(labels, e.stats.acceptedTokens);
        }
      };
      const gauges = () => {
        const st = served.scheduler?.stats();
        metrics.queueDepth.set(labels, st?.waiting ?? 0);
        metrics.running.set(labels, st?.running ?? 0);
      };
      served.scheduler
        .run(
          req.tenantId || "anonymous",
          params,
          (e) => {
            observe(e);
            if (e.type === "finished") finished = e;
            else queue.push(toEvent(e));
            gauges();
          },
          signal,
        )
        .then(
          (waited) => {
            queueMs = waited;
            metrics.queue.observe(labels, waited / 1000);
            metrics.e2e.observe(labels, (performance.now() - t0) / 1000);
            if (finished) queue.push(toEvent(finished));
            gauges();
            queue.end();
          },
          (err) => {
            const error = toConnectError(err, deadline);
            gauges();
            queue.end(error);
          },
        );
      gauges(); // the request is queued (or running) now
      yield* queue.drain();
    },
  };
}
