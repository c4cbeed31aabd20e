/**
 * The engine's boundary types. Three parties meet here:
 *  - the checkpoint loader produces `LlavaWeights` / `TwigWeights` (canonical,
 *    layout-independent, fp32 in memory) from a model directory;
 *  - the runtime (graph builder + ONNX sessions + decoding) consumes them;
 *  - the service (scheduler, gRPC) drives an engine through `Engine.generate`,
 *    knowing nothing of tensors.
 */
import type { ScoreSource } from "./decoding/ttp.js";

/** A dense fp32 tensor, row-major. Linear weights keep the HF layout [out, in]. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface LinearWeights {
  weight: Tensor;
  bias?: Tensor;
}

export interface NormWeights {
  weight: Tensor;
  bias?: Tensor;
}

export interface TextConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  rmsNormEps: number;
  ropeTheta: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId?: number;
}

export interface VisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  layerNormEps: number;
  hiddenAct: "quick_gelu" | "gelu";
}

export interface LlavaConfig {
  text: TextConfig;
  vision: VisionConfig;
  /** Token id of the single `<image>` placeholder in the prompt. */
  imageTokenIndex: number;
  /** Which vision hidden state feeds the projector (HF convention: -2 = output of the second-to-last layer). */
  visionFeatureLayer: number;
  /** "default" drops CLS, "full" keeps it. */
  visionFeatureSelectStrategy: "default" | "full";
  projectorHiddenAct: "gelu";
  /** CLIP image normalisation. */
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  /**
   * LLaVA-NeXT (`LlavaNextForConditionalGeneration`, and the video model's image path): pictures are cut by
   * AnyRes into tiles fitted to one of these (height, width) resolutions, plus the whole picture as a base
   * view; `image_newline` ends each row of tile features. Absent for LLaVA-1.5 (one padded square view).
   */
  anyres?: { gridPinpoints: [number, number][] };
  /**
   * LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`): the `<video>` placeholder's id, and how each
   * frame's patch features are pooled (stride x stride, before the projector) into its visual tokens.
   */
  video?: { tokenIndex: number; poolMode: "average" | "max"; poolStride: number };
}

export interface DecoderLayerWeights {
  inputNorm: NormWeights;
  q: LinearWeights;
  k: LinearWeights;
  v: LinearWeights;
  o: LinearWeights;
  postAttentionNorm: NormWeights;
  gate: LinearWeights;
  up: LinearWeights;
  down: LinearWeights;
}

export interface VisionLayerWeights {
  layerNorm1: NormWeights;
  q: LinearWeights;
  k: LinearWeights;
  v: LinearWeights;
  out: LinearWeights;
  layerNorm2: NormWeights;
  fc1: LinearWeights;
  fc2: LinearWeights;
}

export interface LlavaWeights {
  config: LlavaConfig;
  vision: {
    /** [width, channels, patch, patch], no bias. */
    patchEmbedding: Tensor;
    /** [width] */
    classEmbedding: Tensor;
    /** [numPatches + 1, width] */
    positionEmbedding: Tensor;
    preLayerNorm: NormWeights;
    layers: VisionLayerWeights[];
    postLayerNorm: NormWeights;
  };
  projector: { linear1: LinearWeights; linear2: LinearWeights };
  /** [textHidden]: LLaVA-NeXT's `image_newline`, present with `config.anyres`. */
  imageNewline?: Tensor;
  text: {
    /** [vocab, hidden] */
    embedTokens: Tensor;
    layers: DecoderLayerWeights[];
    norm: NormWeights;
    /** [vocab, hidden] */
    lmHead: Tensor;
  };
}

/** A twig: T decoder layers fed by the hidden state after base layer K, with its own norm and head. */
export interface TwigWeights {
  /** Base layers 1..K run before the twig (1-based count). */
  k: number;
  /** Number of twig layers. */
  t: number;
  /** K_f (1-based): base layers after it see no visual tokens. */
  finalWipeLayer: number;
  /**
   * How TTP scores visual tokens when a request names no scorer (TWIGVLM.md's TTP step 2): the twig
   * config's `ttp_score_source`, else "last-token" (the released code's).
   */
  scoreSource?: ScoreSource;
  layers: DecoderLayerWeights[];
  norm: NormWeights;
  lmHead: Tensor;
}

export type Mode = "twig" | "base" | "fastv" | "random" | "ssd-only" | "ttp-only" | "visionzip";
export type Precision = "fp32" | "fp16" | "int4";
export type ExecutionProvider = "cpu" | "cuda";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** A short video: encoded MP4 or WebM bytes (decoded with ffmpeg), or its frames as encoded images, in order. */
export interface VideoInput {
  data?: Uint8Array;
  frames?: Uint8Array[];
}

/** One request, as the engine sees it. Defaults are applied by the caller (validated already). */
export interface GenerateParams {
  /** Encoded image bytes (PNG, JPEG, WebP or GIF); exactly one of image and video. */
  image?: Uint8Array;
  /** A video, for a LLaVA-NeXT-Video model. */
  video?: VideoInput;
  /** Either a conversation (formatted with the model's chat format) or a raw prompt containing `<image>` (or `<video>`). */
  messages?: ChatMessage[];
  prompt?: string;
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** (0, 1]; 1 = no nucleus truncation. */
  topP: number;
  seed?: number;
  stop: string[];
  mode: Mode;
  /** R-bar: average visual tokens per layer; undefined = model default. */
  retainBudget?: number;
  /** delta, default 5. */
  draftLength?: number;
  /** theta, default 0.6. */
  draftThreshold?: number;
  scoreSource?: ScoreSource;
}

export type FinishReason = "stop" | "length" | "stop_sequence";

export interface GenerateStats {
  visualTokens: number;
  visualTokensKept: number;
  prefillMs: number;
  timeToFirstTokenMs: number;
  decodeMs: number;
  tokensPerSecond: number;
  draftedTokens: number;
  acceptedTokens: number;
  acceptanceRate: number;
  verifications: number;
  meanAcceptedLength: number;
  /** histogram[i] = verifications that accepted exactly i drafted tokens. */
  acceptedLengthHistogram: number[];
}

/**
 * A grid of visual tokens over a rectangle of the picture (fractions of its width and height from its
 * top-left corner; it can reach past the picture); the token at row r, column c is firstIndex + r * cols + c.
 */
export interface VisualGrid {
  firstIndex: number;
  rows: number;
  cols: number;
  left: number;
  top: number;
  width: number;
  height: number;
  /** Tokens from one row to the next when not `cols` (a LLaVA-NeXT tile: its row of tiles and an image_newline). */
  rowStride?: number;
  /** What the grid covers, when not the whole (padded) picture: LLaVA-NeXT's base view or a tile, or a video frame. */
  source?: "base" | "tile" | "frame";
  /** The tile's number (row by row from 0) or the frame's (in the sampled frames, from 0). */
  index?: number;
}

export type EngineEvent =
  | {
      type: "started";
      promptTokens: number;
      visualTokens: number;
      keptVisualIndices: number[];
      /** Where the visual tokens lie on the picture (one grid per tower pass: view, tile or frame). */
      visualGrids: VisualGrid[];
      /** A video's sampled frames: their indices in the clip (or the list of frames). */
      videoFrames?: number[];
    }
  /**
   * Text never splits a multi-byte character and never contains (part of) a stop sequence. A
   * verification's accepted drafts and the full model's own token are separate deltas, so
   * acceptedDraftTokens is 0 or tokenIds.length.
   */
  | { type: "delta"; text: string; tokenIds: number[]; acceptedDraftTokens: number }
  | {
      type: "finished";
      finishReason: FinishReason;
      usage: { promptTokens: number; completionTokens: number };
      stats: GenerateStats;
    };

/** Thrown for bad requests (unknown mode, undecodable image, prompt too long, ...): maps to INVALID_ARGUMENT. */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
}

/** What the service drives. Implementations run the model off the main thread. */
export interface Engine {
  readonly info: {
    name: string;
    /** N of a picture; for LLaVA-NeXT the most any picture gives (N varies with the picture's shape). */
    visualTokens: number;
    /** LLaVA-NeXT-Video: visual tokens per frame and the most frames a video is sampled to. */
    video?: { tokensPerFrame: number; maxFrames: number };
    /** N varies from request to request (LLaVA-NeXT's pictures, videos): budgets are checked against the request's. */
    visualTokensVary?: boolean;
    numLayers: number;
    contextLength: number;
    twig?: {
      k: number;
      t: number;
      finalWipeLayer: number;
      defaultRetainBudget: number;
      /** The scorer TTP (and `fastv`) use when a request names none. */
      defaultScoreSource: ScoreSource;
    };
  };
  /**
   * Runs one request, calling `onEvent` for "started", each "delta" and "finished" in order.
   * Aborting `signal` stops within one decoding step and rejects with an AbortError.
   */
  generate(params: GenerateParams, onEvent: (event: EngineEvent) => void, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}
