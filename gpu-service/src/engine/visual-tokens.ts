/**
 * How many visual tokens (N) a model gives a picture or a video, from its config alone: LLaVA-1.5 one
 * square view (its patch grid, plus CLS under the "full" strategy); LLaVA-NeXT a number that varies with the
 * picture's shape (anyres/layout.ts), at most the largest over its grid pinpoints; LLaVA-NeXT-Video, per
 * frame, its pooled patch grid.
 */
import { anyresSpecOf, anyresTokenCount, maxAnyresTokens } from "./anyres/layout.js";
import { pooledSide } from "./video/frames.js";
import type { LlavaConfig } from "./weights.js";

export type VisualConfig = Pick<LlavaConfig, "vision" | "visionFeatureSelectStrategy" | "anyres" | "video">;

/** N of one square view. */
export function viewTokens(c: VisualConfig): number {
  const n = (c.vision.imageSize / c.vision.patchSize) ** 2;
  return c.visionFeatureSelectStrategy === "default" ? n : n + 1;
}

/** N of a picture of (height, width): AnyRes's count for LLaVA-NeXT, else one view's. */
export function pictureTokens(c: VisualConfig, height: number, width: number): number {
  if (!c.anyres) return viewTokens(c);
  return anyresTokenCount([height, width], anyresSpecOf(c.anyres.gridPinpoints, c.vision));
}

/** The most visual tokens a picture can give. */
export function maxPictureTokens(c: VisualConfig): number {
  if (!c.anyres) return viewTokens(c);
  return maxAnyresTokens(anyresSpecOf(c.anyres.gridPinpoints, c.vision));
}

/** Visual tokens per video frame (LLaVA-NeXT-Video), or undefined for a model that reads no video. */
export function frameTokens(c: VisualConfig): number | undefined {
  if (!c.video) return undefined;
  return pooledSide(c.vision.imageSize / c.vision.patchSize, c.video.poolStride) ** 2;
}
