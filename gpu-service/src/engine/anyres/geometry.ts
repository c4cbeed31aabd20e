/**
 * LLaVA-NeXT's AnyRes geometry, as Hugging Face transformers computes it, so that a picture is cut and its
 * features are laid out exactly as `LlavaNextImageProcessor` and `LlavaNextModel` do. Sizes are
 * (height, width) pairs, as in transformers.
 *
 *   select_best_resolution  (image_processing_utils)  the grid resolution a picture is fitted into
 *   get_patch_output_size   (image_processing_utils)  the picture resized, aspect kept, to fit it
 *   _pad_for_patching       (image_processing_llava_next)  where it is pasted on the black canvas
 *   get_anyres_image_grid_shape  (modeling_llava_next)  tiles per column and row
 *   unpad_image             (modeling_llava_next)  the feature rows or columns only padding fed
 */

/** (height, width) in pixels. */
export type Size = readonly [number, number];

/**
 * transformers' `select_best_resolution`: of the (height, width) pinpoints, the one that keeps the most of
 * the picture's pixels once the picture is scaled to fit it, and wastes the least on ties (first wins).
 */
export function selectBestResolution(original: Size, pinpoints: readonly Size[]): Size {
  const [h, w] = original;
  let best: Size | undefined;
  let maxEffective = 0;
  let minWasted = Number.POSITIVE_INFINITY;
  for (const [ph, pw] of pinpoints) {
    const scale = Math.min(pw / w, ph / h);
    const effective = Math.min(Math.trunc(w * scale) * Math.trunc(h * scale), w * h);
    const wasted = pw * ph - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = [ph, pw];
    }
  }
  if (!best) throw new RangeError("no grid pinpoint fits the picture");
  return best;
}

/** transformers' `get_patch_output_size`: the picture's size resized, aspect kept, to fit `target`. */
export function patchOutputSize(original: Size, target: Size): Size {
  const [h, w] = original;
  const [th, tw] = target;
  const scaleW = tw / w;
  const scaleH = th / h;
  if (scaleW < scaleH) return [Math.min(Math.ceil(h * scaleW), th), tw];
  return [th, Math.min(Math.ceil(w * scaleH), tw)];
}

/** `_pad_for_patching`: the resized picture's top-left corner on the canvas (the odd pixel of padding goes bottom/right). */
export function pasteOffset(resized: Size, target: Size): { top: number; left: number } {
  return { top: Math.floor((target[0] - resized[0]) / 2), left: Math.floor((target[1] - resized[1]) / 2) };
}

/** `get_anyres_image_grid_shape`: (tile rows, tile columns) for a picture, tiles of `tile` pixels. */
export function gridShape(original: Size, pinpoints: readonly Size[], tile: number): { rows: number; cols: number } {
  const [h, w] = selectBestResolution(original, pinpoints);
  return { rows: Math.floor(h / tile), cols: Math.floor(w / tile) };
}

/** Python's `int(round(x, 7))` for the non-negative values unpad_image rounds. */
const intRound7 = (x: number) => Math.trunc(Math.round(x * 1e7) / 1e7);

/**
 * `unpad_image` on a feature grid of `height` x `width` for a picture of `original` size: the rows
 * [top, bottom) and columns [left, right) it keeps (the ones not fed only by the canvas's padding).
 */
export function unpadBounds(
  height: number,
  width: number,
  original: Size,
): { top: number; bottom: number; left: number; right: number } {
  const [oh, ow] = original;
  if (ow / oh > width / height) {
    const newHeight = intRound7(oh * (width / ow));
    const padding = Math.floor((height - newHeight) / 2);
    return { top: padding, bottom: height - padding, left: 0, right: width };
  }
  const newWidth = intRound7(ow * (height / oh));
  const padding = Math.floor((width - newWidth) / 2);
  return { top: 0, bottom: height, left: padding, right: width - padding };
}
