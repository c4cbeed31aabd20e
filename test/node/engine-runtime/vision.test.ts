/** The ONNX vision tower + projector against the float64 reference. */
import { describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { topR } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { visionGraph } from "../../../gpu-service/src/engine/onnx/vision.js";
import { visionForwardRef, visionRef } from "../../../gpu-service/src/engine/reference/vision.js";
import { createSession, ort } from "../../../gpu-service/src/engine/runtime/session.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";
import { maxRelError } from "../../support/tolerance.js";

describe("vision tower + projector (ONNX) vs reference", () => {
  for (const strategy of ["default", "full"] as const) {
    it(`matches with feature layer -2, strategy ${strategy}`, async () => {
      const weights = randomLlavaWeights(7);
      weights.config.visionFeatureSelectStrategy = strategy;
      const S = weights.config.vision.imageSize;
      const pixels = randomTensor(new Rng(3), [3, S, S], 2).data;
      const session = await createSession(visionGraph(weights), { threads: 1 });
      const out = await session.run({ pixel_values: new ort.Tensor("float32", pixels, [1, 3, S, S]) });
      const ref = visionRef(weights, pixels);
      const n = strategy === "default" ? 16 : 17;
      expect(out.image_features.dims).toEqual([1, n, weights.config.text.hiddenSize]);
      expect(
        maxRelError(
          out.image_features.data as Float32Array,
          ref.flatMap((r) => Array.from(r)),
        ),
      ).toBeLessThan(1e-4);
      await session.release();
    });

    it(`outputs the CLS attention of the feature layer (strategy ${strategy}), matching the reference`, async () => {
      const weights = randomLlavaWeights(8);
      weights.config.visionFeatureSelectStrategy = strategy;
      const S = weights.config.vision.imageSize;
      const session = await createSession(visionGraph(weights, { clsAttention: true }), { threads: 1 });
      const n = strategy === "default" ? 16 : 17;
      for (const seed of [3, 4, 5]) {
        const pixels = randomTensor(new Rng(seed), [3, S, S], 2).data;
        const out = await session.run({ pixel_values: new ort.Tensor("float32", pixels, [1, 3, S, S]) });
        const ref = visionForwardRef(weights, pixels);
        expect(out.cls_attention.dims).toEqual([1, n]);
        const got = out.cls_attention.data as Float32Array;
        expect(maxRelError(got, Array.from(ref.clsAttention))).toBeLessThan(1e-4);
        // a probability row over all 17 keys, restricted to the visual ones: below 1, and above 0 everywhere
        const mass = ref.clsAttention.reduce((a, b) => a + b, 0);
        expect(mass).toBeLessThanOrEqual(1 + 1e-9);
        expect(mass).toBeGreaterThan(strategy === "full" ? 1 - 1e-9 : 0);
        expect(topR(got, 5)).toEqual(topR(ref.clsAttention, 5));
        // the features output is unchanged by asking for the attention too
        expect(
          maxRelError(
            out.image_features.data as Float32Array,
            visionRef(weights, pixels).flatMap((r) => Array.from(r)),
          ),
        ).toBeLessThan(1e-4);
      }
      await session.release();
    });
  }
});
