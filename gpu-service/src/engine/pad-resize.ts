/**
 * LLaVA's "pad" geometry as arithmetic: the picture is centred on a square of
 * the fill colour (`expand2square`: pasted at ((side-w)//2, (side-h)//2)), and
 * the square is resized to size x size with Pillow's bicubic filter (a = -0.5,
 * widened by the scale when shrinking, horizontal pass first, each pass rounded
 * to 8 bits), as CLIPImageProcessor does.
 *
 * The square is never built. Each output pixel is a weighted sum over the
 * square's pixels in its filter window; the padding pixels all hold the fill
 * colour, so their weights are summed into one share, and only the picture's
 * own pixels are read. Memory is the picture plus size rows of the first pass.
 *
 * The picture may come in smaller than its declared size (shrunk beforehand,
 * for large uploads): each of its pixels then stands for `declared/actual`
 * pixels of the square on that axis, at the same place, and weighs that much.
 *
 * `resizePicture` is the same filter without padding (LLaVA-NeXT's tiles and base
 * view, video frames); a picture at its own size goes through Pillow's own
 * fixed-point arithmetic there, so that it equals Pillow bit for bit.
 */

/** Pillow's bicubic kernel (a = -0.5), support 2. */
function bicubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** One output coordinate's filter: the share of the fill colour, and weights over picture pixels from `first`. */
interface Taps {
  fillShare: number;
  first: number;
  weights: Float64Array;
  /** Pillow's fixed-point weights (PRECISION_BITS fraction bits), when the filter is Pillow's exactly (no padding, no first shrink). */
  fixed?: Int32Array;
}

/** Pillow's fraction bits for 8-bit resampling: 32 - 8 - 2. */
const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;

/**
 * Pillow's own filter for resizing an axis of `inSize` pixels to `outSize` (Resample.c's precompute_coeffs
 * and normalize_coeffs_8bpc): the window, the kernel at ((i - center + 0.5) / filterscale), normalised, then
 * rounded to fixed point. With it the resize is bit-exact with Pillow's `resize(..., BICUBIC)`.
 */
function pillowTaps(inSize: number, outSize: number): Taps[] {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const ss = 1 / filterscale;
  return Array.from({ length: outSize }, (_, xx) => {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const weights = new Float64Array(Math.max(0, xmax));
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      weights[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += weights[x];
    }
    if (ww !== 0) for (let x = 0; x < xmax; x++) weights[x] /= ww;
    const fixed = Int32Array.from(weights, (w) => Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE));
    return { fillShare: 0, first: xmin, weights, fixed };
  });
}

/**
 * The filter of every output coordinate on one axis, in Pillow's terms: output
 * x samples the square around (x + 0.5) * scale with the kernel widened by the
 * scale (when shrinking); weights are normalised over the square's pixels.
 */
function axisTaps(declared: number, actual: number, side: number, size: number): Taps[] {
  const offset = Math.floor((side - declared) / 2);
  const scale = side / size;
  const widen = Math.max(scale, 1);
  const support = 2 * widen;
  const span = declared / actual; // square pixels per picture pixel
  const taps: Taps[] = [];
  for (let x = 0; x < size; x++) {
    const center = (x + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), side);
    let fill = 0;
    for (let i = lo; i < Math.min(hi, offset); i++) fill += bicubic((i + 0.5 - center) / widen);
    for (let i = Math.max(lo, offset + declared); i < hi; i++) fill += bicubic((i + 0.5 - center) / widen);
    // picture pixel j is centred at offset + (j + 0.5) * span in the square
    const first = Math.max(0, Math.floor((center - support - offset) / span - 0.5));
    const last = Math.min(actual - 1, Math.ceil((center + support - offset) / span - 0.5));
    const weights = new Float64Array(Math.max(0, last - first + 1));
    let total = fill;
    for (let j = first; j <= last; j++) {
      const w = span * bicubic((offset + (j + 0.5) * span - center) / widen);
      weights[j - first] = w;
      total += w;
    }
    for (let k = 0; k < weights.length; k++) weights[k] /= total;
    taps.push({ fillShare: fill / total, first, weights });
  }
  return taps;
}

const toByte = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : Math.floor(v + 0.5));

export interface RgbPicture {
  /** Interleaved RGB, 8 bits, row-major. */
  data: Uint8Array;
  width: number;
  height: number;
}

/**
 * Pads `picture` (declared `declaredWidth` x `declaredHeight` pixels, the size
 * the square is built from) to a square of `fill` and resizes it to size x size:
 * interleaved RGB, 8 bits.
 */
export function padToSquareAndResize(
  picture: RgbPicture,
  declaredWidth: number,
  declaredHeight: number,
  size: number,
  fill: readonly [number, number, number],
): Uint8Array {
  const side = Math.max(declaredWidth, declaredHeight);
  const cols = axisTaps(declaredWidth, picture.width, side, size);
  const rows = axisTaps(declaredHeight, picture.height, side, size);
  return resample(picture, cols, rows, fill);
}

/**
 * Pillow's `resize((width, height), BICUBIC)` of `picture` (declared `declaredWidth` x `declaredHeight`, the
 * size the resize is computed from): interleaved RGB, 8 bits. No padding, so the aspect ratio is the caller's.
 */
export function resizePicture(
  picture: RgbPicture,
  declaredWidth: number,
  declaredHeight: number,
  width: number,
  height: number,
): Uint8Array {
  // a picture at its own size is resized with Pillow's fixed-point filter, bit for bit; one shrunk on decoding
  // stands for its declared size, which only the weighted filter can express
  const exact = picture.width === declaredWidth && picture.height === declaredHeight;
  const cols = exact ? pillowTaps(picture.width, width) : axisTaps(declaredWidth, picture.width, declaredWidth, width);
  const rows = exact
    ? pillowTaps(picture.height, height)
    : axisTaps(declaredHeight, picture.height, declaredHeight, height);
  return resample(picture, cols, rows, [0, 0, 0]);
}

/** Pillow's clip8 of a fixed-point sum (half already added). */
const clip8 = (ss: number) => (ss <= 0 ? 0 : ss >= 256 * ONE ? 255 : Math.floor(ss / ONE));

/**
 * Whether an axis's filter leaves every pixel as it is: as many outputs as inputs, none sampling the
 * fill, each with weight exactly 1 on its own pixel and 0 on the others. That is a picture already at
 * the output's size on that axis (Pillow's bicubic kernel is 1 at 0 and 0 at every other integer
 * offset, so its sum is the pixel itself, in floating and in fixed point).
 */
function isIdentity(taps: readonly Taps[], inSize: number): boolean {
  return (
    taps.length === inSize &&
    taps.every(({ fillShare, first, weights, fixed }, x) => {
      const w = fixed ?? weights;
      const one = fixed ? ONE : 1;
      return fillShare === 0 && w.every((v, k) => v === (first + k === x ? one : 0));
    })
  );
}

/**
 * The two passes, horizontal then vertical, each rounded to 8 bits (as Pillow): output cols.length x rows.length.
 * A coordinate with fixed-point weights sums as Pillow does (integers, half added, shifted, clipped).
 * A pass whose filter is the identity (isIdentity) is a copy: a picture at the tower's size is not resampled.
 */
function resample(
  picture: RgbPicture,
  cols: Taps[],
  rows: Taps[],
  fill: readonly [number, number, number],
): Uint8Array {
  const { data, width } = picture;
  const outW = cols.length;
  const sameRows = isIdentity(rows, picture.height);
  if (isIdentity(cols, width)) return sameRows ? data.slice() : rowsPass(data, outW, rows, fill);
  // first pass: each picture row to outW columns (the padding rows are the fill colour throughout)
  const wide = new Uint8Array(picture.height * outW * 3);
  for (let y = 0; y < picture.height; y++) {
    for (let x = 0; x < outW; x++) {
      const { fillShare, first, weights, fixed } = cols[x];
      for (let c = 0; c < 3; c++) {
        let v: number;
        if (fixed) {
          let ss = ONE / 2;
          for (let k = 0; k < fixed.length; k++) ss += fixed[k] * data[(y * width + first + k) * 3 + c];
          v = clip8(ss);
        } else {
          let f = fillShare * fill[c];
          for (let k = 0; k < weights.length; k++) f += weights[k] * data[(y * width + first + k) * 3 + c];
          v = toByte(f);
        }
        wide[(y * outW + x) * 3 + c] = v;
      }
    }
  }
  return sameRows ? wide : rowsPass(wide, outW, rows, fill);
}

/** The second pass: the first pass's rows (outW pixels wide) to rows.length rows. */
function rowsPass(wide: Uint8Array, outW: number, rows: Taps[], fill: readonly [number, number, number]): Uint8Array {
  const outH = rows.length;
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const { fillShare, first, weights, fixed } = rows[y];
    for (let x = 0; x < outW; x++) {
      for (let c = 0; c < 3; c++) {
        let v: number;
        if (fixed) {
          let ss = ONE / 2;
          for (let k = 0; k < fixed.length; k++) ss += fixed[k] * wide[((first + k) * outW + x) * 3 + c];
          v = clip8(ss);
        } else {
          let f = fillShare * fill[c];
          for (let k = 0; k < weights.length; k++) f += weights[k] * wide[((first + k) * outW + x) * 3 + c];
          v = toByte(f);
        }
        out[(y * outW + x) * 3 + c] = v;
      }
    }
  }
  return out;
}
