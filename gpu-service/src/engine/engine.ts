/**
 * The Engine: what the service drives (through the scheduler) and the tools run, knowing nothing
 * of tensors. LocalEngine runs in the calling thread; WorkerEngine runs one in a worker thread.
 */
import type { ScoreSource } from "./decoding/ttp.js";
import type { EngineEvent } from "./events.js";
import type { GenerateParams } from "./plan.js";
import type { VisualConfig } from "./visual-tokens.js";

/** What an engine says of its model (and, through ListModels, the service of it). */
export interface EngineInfo {
  name: string;
  /** N of a picture; for LLaVA-NeXT the most any picture gives (N varies with the picture's shape). */
  visualTokens: number;
  /** LLaVA-NeXT-Video: visual tokens per frame and the most frames a video is sampled to. */
  video?: { tokensPerFrame: number; maxFrames: number };
  /** N varies from request to request (LLaVA-NeXT's pictures, videos): budgets are checked against the request's. */
  visualTokensVary?: boolean;
  /** What N of a picture or video is counted from (plan-request.ts reads it where N varies). */
  visual?: VisualConfig;
  numLayers: number;
  contextLength: number;
  /** Requests it decodes together (continuous batching); absent or 1: one at a time. */
  maxBatch?: number;
  twig?: {
    k: number;
    t: number;
    finalWipeLayer: number;
    /** R-bar when a request names no budget, for a request of `visualTokens`. */
    defaultRetainBudget: number;
    /** The share pruned when a request names no budget, where the model names one (R-bar from each request's N). */
    defaultPrunedFraction?: number;
    /** The scorer TTP (and `fastv`) use when a request names none. */
    defaultScoreSource: ScoreSource;
  };
}

/**
 * A batching engine worker's state, as its batch loop reports it after a change (for metrics): the
 * sequences decoding together, the requests it holds until its KV budget has room (preempted ones
 * included), the KV memory its batch holds and may hold, and the sequences it has preempted so far.
 */
export interface BatchStats {
  running: number;
  waiting: number;
  kvBytes: number;
  kvBudgetBytes: number;
  preemptions: number;
  /** Requests whose long prompt is being prefilled over several rounds now (0 or 1), and such prefills so far. */
  prefilling: number;
  longPrefills: number;
}

/** What the service drives. Implementations run the model off the main thread. */
export interface Engine {
  readonly info: EngineInfo;
  /**
   * Runs one request as planned (plan-request.ts), calling `onEvent` for "started", each "delta" and "finished" in order.
   * Aborting `signal` stops within one decoding step and rejects with an AbortError.
   */
  generate(params: GenerateParams, onEvent: (event: EngineEvent) => void, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}
