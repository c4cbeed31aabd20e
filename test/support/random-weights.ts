/** Seeded random LLaMA decoder weights for engine tests (no checkpoint on disk). */
import { Rng } from "../../gpu-service/src/engine/decoding/sampling.js";
import type {
  DecoderLayerWeights,
  LlavaWeights,
  Tensor,
  TextConfig,
  VisionConfig,
} from "../../gpu-service/src/engine/types.js";

export function randomTensor(rng: Rng, shape: number[], scale: number, offset = 0): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = offset + (rng.next() * 2 - 1) * scale;
  return { shape, data };
}

export function tinyTextConfig(overrides: Partial<TextConfig> = {}): TextConfig {
  return {
    hiddenSize: 32,
    intermediateSize: 48,
    numLayers: 3,
    numHeads: 4,
    numKvHeads: 2,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    vocabSize: 40,
    maxPositionEmbeddings: 64,
    bosTokenId: 1,
    eosTokenId: 2,
    ...overrides,
  };
}

export function randomDecoderLayers(rng: Rng, c: TextConfig, count = c.numLayers): DecoderLayerWeights[] {
  const hd = c.hiddenSize / c.numHeads;
  const s = 1 / Math.sqrt(c.hiddenSize);
  return Array.from({ length: count }, () => ({
    inputNorm: { weight: randomTensor(rng, [c.hiddenSize], 0.2, 1) },
    q: { weight: randomTensor(rng, [c.hiddenSize, c.hiddenSize], s * 2) },
    k: { weight: randomTensor(rng, [c.numKvHeads * hd, c.hiddenSize], s * 2) },
    v: { weight: randomTensor(rng, [c.numKvHeads * hd, c.hiddenSize], s) },
    o: { weight: randomTensor(rng, [c.hiddenSize, c.hiddenSize], s) },
    postAttentionNorm: { weight: randomTensor(rng, [c.hiddenSize], 0.2, 1) },
    gate: { weight: randomTensor(rng, [c.intermediateSize, c.hiddenSize], s) },
    up: { weight: randomTensor(rng, [c.intermediateSize, c.hiddenSize], s) },
    down: { weight: randomTensor(rng, [c.hiddenSize, c.intermediateSize], 1 / Math.sqrt(c.intermediateSize)) },
  }));
}

/** A complete random LLaVA (tiny ViT + projector + decoder), for engine tests. */
export function randomLlavaWeights(seed: number, text: Partial<TextConfig> = {}): LlavaWeights {
  const rng = new Rng(seed);
  const tc = tinyTextConfig(text);
  const vc: VisionConfig = {
    hiddenSize: 24,
    intermediateSize: 40,
    numLayers: 3,
    numHeads: 3,
    imageSize: 16,
    patchSize: 4,
    numChannels: 3,
    layerNormEps: 1e-5,
    hiddenAct: "quick_gelu",
  };
  const w = vc.hiddenSize;
  const lin = (out: number, inp: number) => ({
    weight: randomTensor(rng, [out, inp], 1 / Math.sqrt(inp)),
    bias: randomTensor(rng, [out], 0.1),
  });
  const ln = (n: number) => ({ weight: randomTensor(rng, [n], 0.2, 1), bias: randomTensor(rng, [n], 0.1) });
  const patches = (vc.imageSize / vc.patchSize) ** 2;
  return {
    config: {
      text: tc,
      vision: vc,
      imageTokenIndex: tc.vocabSize - 1,
      visionFeatureLayer: -2,
      visionFeatureSelectStrategy: "default",
      projectorHiddenAct: "gelu",
      imageMean: [0.48145466, 0.4578275, 0.40821073],
      imageStd: [0.26862954, 0.26130258, 0.27577711],
    },
    vision: {
      patchEmbedding: randomTensor(rng, [w, 3, vc.patchSize, vc.patchSize], 0.2),
      classEmbedding: randomTensor(rng, [w], 0.5),
      positionEmbedding: randomTensor(rng, [patches + 1, w], 0.5),
      preLayerNorm: ln(w),
      layers: Array.from({ length: vc.numLayers }, () => ({
        layerNorm1: ln(w),
        q: lin(w, w),
        k: lin(w, w),
        v: lin(w, w),
        out: lin(w, w),
        layerNorm2: ln(w),
        fc1: lin(vc.intermediateSize, w),
        fc2: lin(w, vc.intermediateSize),
      })),
      postLayerNorm: ln(w),
    },
    projector: { linear1: lin(tc.hiddenSize, w), linear2: lin(tc.hiddenSize, tc.hiddenSize) },
    text: {
      embedTokens: randomTensor(rng, [tc.vocabSize, tc.hiddenSize], 1),
      layers: randomDecoderLayers(rng, tc),
      norm: { weight: randomTensor(rng, [tc.hiddenSize], 0.2, 1) },
      lmHead: randomTensor(rng, [tc.vocabSize, tc.hiddenSize], (1 / Math.sqrt(tc.hiddenSize)) * 4),
    },
  };
}
