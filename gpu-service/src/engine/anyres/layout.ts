/**
 * Where each of a LLaVA-NeXT picture's visual tokens comes from, and how they are packed, as
 * transformers' `LlavaNextModel.pack_image_features` lays them out for one image:
 *
 *   1. the base view (the whole picture resized to the tower's square): its P x P patch features, row by row;
 *   2. the tiles' features as one grid of (tileRows * P) x (tileCols * P) patches (`view(rows, cols, P, P, d)`,
 *      `permute(4, 0, 2, 1, 3)`), cut by `unpad_image` to the rows or columns the picture fed (not only the
 *      canvas's black padding), row by row, each row followed by one `image_newline` token.
 *
 * N = P*P + rows * (cols + 1). The layout is a pure function of the picture's size and the model's config,
 * so the engine, the reference and anyone budgeting a request compute the same one.
 */
import type { VisualGrid } from "../events.js";
import { gridShape, pasteOffset, patchOutputSize, type Size, selectBestResolution, unpadBounds } from "./geometry.js";

export interface AnyresSpec {
  /** (height, width) resolutions the picture can be fitted into, multiples of `tile`. */
  pinpoints: readonly Size[];
  /** The tower's input size in pixels (a tile's side). */
  tile: number;
  /** Patches per side of a view (tile / patch size). */
  side: number;
}

export interface AnyresLayout {
  /** The picture's (height, width). */
  imageSize: Size;
  /** The canvas the picture is fitted into (select_best_resolution). */
  canvas: Size;
  /** The picture's size on the canvas (get_patch_output_size) and where it is pasted. */
  resized: Size;
  paste: { top: number; left: number };
  tileRows: number;
  tileCols: number;
  side: number;
  /** The feature rows [top, bottom) and columns [left, right) of the tile grid that unpad_image keeps. */
  keep: { top: number; bottom: number; left: number; right: number };
  /** Views the tower runs: the base view, then the tiles row by row. */
  views: number;
  /**
   * Per visual token, where it comes from: view * side * side + patch (row-major within the view), or -1
   * for an image_newline token. Length N.
   */
  sources: Int32Array;
}

/** The layout of a picture of `imageSize` (height, width). */
export function anyresLayout(imageSize: Size, spec: AnyresSpec): AnyresLayout {
  const { tile, side } = spec;
  const canvas = selectBestResolution(imageSize, spec.pinpoints);
  const resized = patchOutputSize(imageSize, canvas);
  const { rows: tileRows, cols: tileCols } = gridShape(imageSize, spec.pinpoints, tile);
  const keep = unpadBounds(tileRows * side, tileCols * side, imageSize);
  const rows = keep.bottom - keep.top;
  const cols = keep.right - keep.left;
  const sources = new Int32Array(side * side + rows * (cols + 1));
  for (let p = 0; p < side * side; p++) sources[p] = p;
  let at = side * side;
  for (let r = keep.top; r < keep.bottom; r++) {
    for (let c = keep.left; c < keep.right; c++) {
      const view = 1 + Math.floor(r / side) * tileCols + Math.floor(c / side);
      sources[at++] = view * side * side + (r % side) * side + (c % side);
    }
    sources[at++] = -1;
  }
  return {
    imageSize,
    canvas,
    resized,
    paste: pasteOffset(resized, canvas),
    tileRows,
    tileCols,
    side,
    keep,
    views: 1 + tileRows * tileCols,
    sources,
  };
}

/** N, the visual tokens of a picture of `imageSize` (height, width). */
export function anyresTokenCount(imageSize: Size, spec: AnyresSpec): number {
  return anyresLayout(imageSize, spec).sources.length;
}

/** The most visual tokens any picture can produce: the largest over the pinpoints (a picture of that very size). */
export function maxAnyresTokens(spec: AnyresSpec): number {
  return Math.max(...spec.pinpoints.map((p) => anyresTokenCount(p, spec)));
}

/**
 * Packs per-view rows ([views][side*side * width], the tower's output for each view) into the visual
 * tokens [N, width]; an image_newline token gets `newline` (length width).
 */
export function packRows(
  layout: AnyresLayout,
  perView: readonly Float32Array[],
  width: number,
  newline: Float32Array,
): Float32Array {
  const out = new Float32Array(layout.sources.length * width);
  const perViewTokens = layout.side * layout.side;
  layout.sources.forEach((src, i) => {
    if (src < 0) out.set(newline, i * width);
    else {
      const p = src % perViewTokens;
      out.set(perView[(src - p) / perViewTokens].subarray(p * width, (p + 1) * width), i * width);
    }
  });
  return out;
}

/** Packs per-view scores ([views][side*side]) into one score per visual token; image_newline tokens score `newline`. */
export function packScores(layout: AnyresLayout, perView: readonly ArrayLike<number>[], newline = 0): Float64Array {
  const perViewTokens = layout.side * layout.side;
  return Float64Array.from(layout.sources, (src) =>
    src < 0 ? newline : perView[Math.floor(src / perViewTokens)][src % perViewTokens],
  );
}

/**
 * Where the visual tokens lie on the picture: the base view's grid over the whole picture (it is the
 * picture resized to a square, aspect not kept), then one grid per tile that kept any row and column,
 * over the part of the picture that tile's kept patches cover (a fraction past an edge where a patch
 * also covered padding). Rows of a tile grid are `cols + 1` tokens apart (the whole row of tiles and its
 * image_newline).
 */
export function anyresGrids(layout: AnyresLayout, tile: number): VisualGrid[] {
  const { side, keep, paste, resized } = layout;
  const base = side * side;
  const stride = keep.right - keep.left + 1;
  const patch = tile / side; // canvas pixels per feature
  const grids: VisualGrid[] = [
    { firstIndex: 0, rows: side, cols: side, left: 0, top: 0, width: 1, height: 1, source: "base", index: 0 },
  ];
  for (let i = 0; i < layout.tileRows; i++) {
    for (let j = 0; j < layout.tileCols; j++) {
      const r0 = Math.max(i * side, keep.top);
      const r1 = Math.min((i + 1) * side, keep.bottom);
      const c0 = Math.max(j * side, keep.left);
      const c1 = Math.min((j + 1) * side, keep.right);
      if (r1 <= r0 || c1 <= c0) continue;
      grids.push({
        firstIndex: base + (r0 - keep.top) * stride + (c0 - keep.left),
        rows: r1 - r0,
        cols: c1 - c0,
        rowStride: stride,
        left: (c0 * patch - paste.left) / resized[1],
        top: (r0 * patch - paste.top) / resized[0],
        width: ((c1 - c0) * patch) / resized[1],
        height: ((r1 - r0) * patch) / resized[0],
        source: "tile",
        index: i * layout.tileCols + j,
      });
    }
  }
  return grids;
}

/** An AnyRes spec from a model config's pinpoints and vision tower. */
export function anyresSpecOf(pinpoints: readonly Size[], vision: { imageSize: number; patchSize: number }): AnyresSpec {
  return { pinpoints, tile: vision.imageSize, side: vision.imageSize / vision.patchSize };
}
