/** The ONNX vision tower + projector against the float64 reference. */
import { describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { visionGraph } from "../../../gpu-service/src/engine/onnx/vision.js";
import { visionRef } from "../../../gpu-service/src/engine/reference/vision.js";
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
  }
});
