/**
 * VisionZip-style dominant tokens: the visual tokens the vision tower's CLS token attends to most,
 * chosen before the LLM sees the picture. With A the attention probabilities of the tower's feature
 * layer (the last it runs), [heads H, 1 + N, 1 + N], row 0 being CLS,
 *
 *   s_i = (1/H) * sum_h A[h, CLS, v_i]
 *
 * computed inside the vision graph (onnx/vision.ts: `cls_attention`), so the prefill reads no
 * attention of the LLM for it.
 */
import type { Pruner } from "./pruner.js";

export const visionzip: Pruner = {
  scores: (x) => x.image.clsAttention,
};
