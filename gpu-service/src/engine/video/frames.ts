/**
 * A video's frames for LLaVA-NeXT-Video, as its processor (`LlavaNextVideoImageProcessor`, CLIP's recipe)
 * prepares each frame: resized so that its shorter side is the tower's size, the longer
 * `int(S * long / short)` (`get_resize_output_image_size`, Pillow's bicubic on 8-bit pixels), cropped to the
 * centre S x S (`center_crop`: top `(h - S) // 2`, left `(w - S) // 2`), rescaled and normalised. Frames
 * already S x S pass through unchanged.
 *
 * Which frames: `sampleFrameIndices` spreads a cap of frames uniformly over a clip, as transformers' video
 * utilities do (`np.arange(0, total, total / n).astype(int)`).
 *
 * The frames' visual tokens follow one another, frame by frame, each frame's pooled patch grid row by row
 * (`LlavaNextVideoModel.get_video_features`: the pooler's output, projected, flattened over frames).
 */

import type { VisualGrid } from "../events.js";
import { normalise, type PreprocessSpec } from "../image.js";
import type { RgbPicture } from "../pad-resize.js";
import { resizePicture } from "../pad-resize.js";

/** Up to `cap` frame indices of a clip of `total` frames, spread uniformly from the first. */
export function sampleFrameIndices(total: number, cap: number): number[] {
  const n = Math.min(total, cap);
  if (n <= 0) return [];
  const step = total / n;
  return Array.from({ length: n }, (_, i) => Math.trunc(i * step));
}

/** Where a frame of width x height lands: its size after the shortest-edge resize and the crop's corner. */
export function frameCrop(
  width: number,
  height: number,
  S: number,
): { width: number; height: number; top: number; left: number } {
  const [short, long] = width <= height ? [width, height] : [height, width];
  const newLong = Math.trunc((S * long) / short);
  const [w, h] = width <= height ? [S, newLong] : [newLong, S];
  return { width: w, height: h, top: Math.floor((h - S) / 2), left: Math.floor((w - S) / 2) };
}

/**
 * One frame's pixel values, float32 [3, S, S]. `declared` is the size the resize is computed from (the
 * frame's own, unless it was shrunk on decoding).
 */
export function preprocessFrame(
  frame: RgbPicture,
  spec: PreprocessSpec,
  declared: { width: number; height: number } = frame,
): Float32Array {
  const S = spec.imageSize;
  const crop = frameCrop(declared.width, declared.height, S);
  const resized =
    crop.width === frame.width && crop.height === frame.height
      ? frame.data
      : resizePicture(frame, declared.width, declared.height, crop.width, crop.height);
  const square = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) {
    const from = ((crop.top + y) * crop.width + crop.left) * 3;
    square.set(resized.subarray(from, from + S * 3), y * S * 3);
  }
  return normalise(square, S, spec);
}

/** The pooled patch grid of each frame: `side` x `side` tokens over the centre crop, frame after frame. */
export function frameGrids(frames: number, side: number, width: number, height: number, S: number): VisualGrid[] {
  const crop = frameCrop(width, height, S);
  return Array.from({ length: frames }, (_, f) => ({
    firstIndex: f * side * side,
    rows: side,
    cols: side,
    left: crop.left / crop.width,
    top: crop.top / crop.height,
    width: S / crop.width,
    height: S / crop.height,
    source: "frame" as const,
    index: f,
  }));
}

/** Patches per side of a frame after pooling (nn.AvgPool2d / MaxPool2d with kernel = stride, floor). */
export function pooledSide(side: number, stride: number): number {
  return Math.floor(side / stride);
}
