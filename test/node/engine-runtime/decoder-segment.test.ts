/**
 * The ONNX decoder segment (contrib ops: RotaryEmbedding + GroupQueryAttention)
 * against the float64 reference: prefill at non-contiguous positions (as after
 * pruning), a multi-token step, rollback, and another multi-token step.
 */
import { describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { decoderLayersRef, type RefLayerCache } from "../../../gpu-service/src/engine/reference/llama.js";
import { DecoderSegment } from "../../../gpu-service/src/engine/runtime/decoder-segment.js";
import { randomDecoderLayers, randomTensor, tinyTextConfig } from "../../support/random-weights.js";
import { maxRelError } from "../../support/tolerance.js";

const rows = (flat: Float32Array, width: number) =>
  Array.from({ length: flat.length / width }, (_, i) => Float64Array.from(flat.subarray(i * width, (i + 1) * width)));

describe("decoder segment (ONNX) vs reference", () => {
  const config = tinyTextConfig();
  const rng = new Rng(42);
  const layers = randomDecoderLayers(rng, config);

  it("matches on prefill, a multi-token step, and a step after rollback, with attention probabilities", async () => {
    const segment = await DecoderSegment.create(config, layers, { attentionProbsLayer: 2, threads: 1 });
    const caches = segment.newCaches();
    const refCaches: RefLayerCache[] = layers.map(() => ({ keys: [], values: [] }));
    const H = config.hiddenSize;

    const steps: { tokens: number; positions: number[]; rollbackTo?: number }[] = [
      { tokens: 7, positions: [0, 1, 2, 5, 8, 9, 10] },
      { tokens: 3, positions: [11, 12, 13] },
      { tokens: 2, positions: [12, 13], rollbackTo: 8 },
    ];
    for (const step of steps) {
      if (step.rollbackTo !== undefined) {
        for (const c of caches) c.truncate(step.rollbackTo);
        for (const c of refCaches) {
          c.keys.length = step.rollbackTo;
          c.values.length = step.rollbackTo;
        }
      }
      const hidden = randomTensor(rng, [step.tokens, H], 1).data;
      const out = await segment.run(hidden, step.positions, caches);
      const ref = decoderLayersRef(config, layers, rows(hidden, H), step.positions, refCaches);
      const expected = Float64Array.from(ref.hidden.flatMap((r) => Array.from(r)));
      expect(maxRelError(out.hidden, expected)).toBeLessThan(1e-4);
      // attention probabilities of layer 2: [heads, S, total]
      const total = caches[2].length;
      const probs = ref.probs[2].flatMap((head) => head.flatMap((row) => row.slice(0, total)));
      expect(out.attentionProbs).toBeDefined();
      expect(maxRelError(out.attentionProbs as Float32Array, probs)).toBeLessThan(1e-4);
      expect(caches.every((c) => c.length === refCaches[0].keys.length)).toBe(true);
    }
    await segment.release();
  });
});
