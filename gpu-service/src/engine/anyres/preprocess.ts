/**
 * A picture's views for LLaVA-NeXT, as `LlavaNextImageProcessor.preprocess` makes them for one image:
 *
 *   1. the picture resized, aspect kept, to fit the best grid resolution (`_resize_for_patching`, Pillow's
 *      bicubic on 8-bit pixels) and pasted on a black canvas of that resolution, centred with the odd pixel
 *      of padding at the bottom and right (`_pad_for_patching`: zeros before normalisation);
 *   2. that canvas cut into tower-size tiles, row by row (`divide_to_patches`);
 *   3. the whole picture resized to the tower's square, aspect not kept, put first (`resized_original_image`);
 *   4. each view rescaled by 1/255 and normalised (the shortest-edge resize and the centre crop that follow
 *      are identities at the tower's size).
 *
 * Decoding, header checks and the first shrink of very large pictures are image.ts's (alpha is dropped, as
 * PIL's convert("RGB")). The canvas is never built: a tile reads the resized picture where it covers it.
 */

import { decodePicture, normalise, type PreprocessSpec } from "../image.js";
import type { ImageLimits } from "../image-format.js";
import { resizePicture } from "../pad-resize.js";
import { type AnyresLayout, type AnyresSpec, anyresLayout } from "./layout.js";

export interface AnyresViews {
  /** float32 [3, S, S] each: the base view, then the tiles row by row. */
  views: Float32Array[];
  layout: AnyresLayout;
}

/** Bytes of a picture → its AnyRes views and their layout. */
export async function preprocessAnyres(
  bytes: Uint8Array,
  spec: PreprocessSpec,
  anyres: AnyresSpec,
  limits?: ImageLimits,
): Promise<AnyresViews> {
  const S = spec.imageSize;
  let layout: AnyresLayout | undefined;
  const decoded = await decodePicture(
    bytes,
    (g) => {
      layout = anyresLayout([g.height, g.width], anyres);
      return Math.max(S, ...layout.resized);
    },
    limits,
  );
  const { picture, declaredWidth, declaredHeight } = decoded;
  // the decoded size is the one the processor sees (it equals the header's unless the picture was shrunk)
  layout = anyresLayout([declaredHeight, declaredWidth], anyres);
  const [rh, rw] = layout.resized;
  const resized = resizePicture(picture, declaredWidth, declaredHeight, rw, rh);
  const views = [normalise(resizePicture(picture, declaredWidth, declaredHeight, S, S), S, spec)];
  const { top, left } = layout.paste;
  const tile = new Uint8Array(S * S * 3);
  for (let i = 0; i < layout.tileRows; i++) {
    for (let j = 0; j < layout.tileCols; j++) {
      tile.fill(0);
      for (let y = 0; y < S; y++) {
        const py = i * S + y - top;
        if (py < 0 || py >= rh) continue;
        const x0 = Math.max(0, left - j * S);
        const x1 = Math.min(S, left + rw - j * S);
        if (x1 <= x0) continue;
        const from = (py * rw + j * S + x0 - left) * 3;
        tile.set(resized.subarray(from, from + (x1 - x0) * 3), (y * S + x0) * 3);
      }
      views.push(normalise(tile, S, spec));
    }
  }
  return { views, layout };
}
