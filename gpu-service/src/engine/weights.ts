/**
 * A model as the engine holds it: the checkpoint loader produces `LlavaWeights` and `TwigWeights`
 * (canonical, layout-independent, fp32 in memory) from a model directory, and the graph builder
 * (onnx/) and the runtime (runtime/) consume them. Plain data: nothing here knows of requests.
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
  /**
   * The share of a request's own visual tokens pruned when it names no budget (the twig config's
   * `default_pruned_fraction`); absent: the paper's headline, R-bar = N/9 (decoding/budget.ts).
   */
  defaultPrunedFraction?: number;
  layers: DecoderLayerWeights[];
  norm: NormWeights;
  lmHead: Tensor;
}
