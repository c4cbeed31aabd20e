/**
 * Where the visual tokens lie on the picture, for clients that draw what TTP
 * kept. A LLaVA-1.5 tower sees the picture padded to a square (centred, mean
 * colour) and cuts it into side x side patches, one visual token each, row by
 * row; a CLS token kept as a visual feature ("full" strategy) comes first and
 * lies in no grid.
 */
import type { VisualGrid } from "./events.js";

/**
 * The patch grid over a picture padded to a square: `side` x `side` tokens
 * ending at the last of `visualTokens`, covering the square in fractions of the
 * picture (so a 2:1 landscape picture's grid has top -0.5 and height 2).
 */
export function paddedSquareGrid(
  picture: { width: number; height: number },
  side: number,
  visualTokens: number,
): VisualGrid {
  const { width, height } = picture;
  const square = Math.max(width, height);
  return {
    firstIndex: visualTokens - side * side,
    rows: side,
    cols: side,
    left: (0 - Math.floor((square - width) / 2)) / width,
    top: (0 - Math.floor((square - height) / 2)) / height,
    width: square / width,
    height: square / height,
  };
}
