/** Seeded random LLaMA decoder weights for engine tests (no checkpoint on disk). */
import type { Rng } from "../../gpu-service/src/engine/decoding/sampling.js";
import type { DecoderLayerWeights, Tensor, TextConfig } from "../../gpu-service/src/engine/types.js";

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
