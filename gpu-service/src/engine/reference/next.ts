/**
 * LLaVA-NeXT's visual path in plain float64 TypeScript, written from transformers' code without the
 * engine's: the yardstick for anyres/, video/frames.ts and the ONNX tower on tiles and frames.
 *
 *   pictures (LlavaNextImageProcessor + LlavaNextModel.pack_image_features):
 *     the picture resized (aspect kept) and pasted on a whole black canvas of the best resolution, the
 *     canvas cut into tiles, the picture resized to the tower's square first; every view through the tower
 *     and the projector; the tile features assembled into one grid exactly as `view(rows, cols, P, P, d)`
 *     and `permute(4, 0, 2, 1, 3)` do, `unpad_image`, one `image_newline` per row, base view first;
 *   videos (LlavaNextVideoImageProcessor + get_video_features):
 *     each frame resized on its shortest edge and centre-cropped, through the tower, its patch features
 *     pooled (average or max, kernel = stride) before the projector, frames one after the other.
 *
 * Pillow's bicubic resize is written out over whole arrays (horizontal pass, then vertical, each rounded to
 * 8 bits with Pillow's fixed-point arithmetic).
 * Geometry that is a transcription of transformers (select_best_resolution, get_patch_output_size) comes
 * from anyres/geometry.ts, which has its own tests against transformers' numbers.
 */
import { patchOutputSize, type Size, selectBestResolution } from "../anyres/geometry.js";
import type { LlavaWeights } from "../weights.js";
import type { Vec } from "./llama.js";
import { projectRef, visionForwardRef } from "./vision.js";

/** 8-bit interleaved RGB. */
export interface Rgb {
  data: Uint8Array;
  width: number;
  height: number;
}

function keys(x: number): number {
  const t = Math.abs(x);
  if (t < 1) return 1.5 * t ** 3 - 2.5 * t ** 2 + 1;
  if (t < 2) return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2;
  return 0;
}

/**
 * One axis as Pillow's Resample.c resamples 8-bit data: per output sample the window around
 * (o + 0.5) * scale, kernel weights at (i - centre + 0.5) / filterscale normalised to sum 1, each rounded
 * to an integer of 22 fraction bits; the sum of input * weight, plus a half, shifted down and clipped.
 */
function resampleLine(get: (i: number) => number, inLen: number, outLen: number): number[] {
  const scale = inLen / outLen;
  const filterscale = Math.max(1, scale);
  const one = 1 << 22;
  return Array.from({ length: outLen }, (_, o) => {
    const centre = (o + 0.5) * scale;
    const from = Math.max(0, Math.trunc(centre - 2 * filterscale + 0.5));
    const to = Math.min(inLen, Math.trunc(centre + 2 * filterscale + 0.5));
    const k: number[] = [];
    for (let i = from; i < to; i++) k.push(keys((i - centre + 0.5) * (1 / filterscale)));
    const norm = k.reduce((a, b) => a + b, 0);
    let sum = one / 2;
    k.forEach((w, j) => {
      const n = norm === 0 ? w : w / norm;
      sum += get(from + j) * Math.trunc(n < 0 ? n * one - 0.5 : n * one + 0.5);
    });
    return sum <= 0 ? 0 : sum >= 256 * one ? 255 : Math.floor(sum / one);
  });
}

/** Pillow's `resize((w, h), BICUBIC)` of an 8-bit RGB image. */
export function pillowResizeRef(img: Rgb, w: number, h: number): Rgb {
  const wide = new Uint8Array(img.height * w * 3);
  for (let y = 0; y < img.height; y++)
    for (let c = 0; c < 3; c++)
      resampleLine((x) => img.data[(y * img.width + x) * 3 + c], img.width, w).forEach((v, x) => {
        wide[(y * w + x) * 3 + c] = v;
      });
  const out = new Uint8Array(w * h * 3);
  for (let x = 0; x < w; x++)
    for (let c = 0; c < 3; c++)
      resampleLine((y) => wide[(y * w + x) * 3 + c], img.height, h).forEach((v, y) => {
        out[(y * w + x) * 3 + c] = v;
      });
  return { data: out, width: w, height: h };
}

/** Rescale and normalise a S x S crop at (top, left) of an RGB image → float32 [3, S, S] (zeros outside it). */
function pixelValues(img: Rgb, top: number, left: number, S: number, weights: LlavaWeights): Float32Array {
  const { imageMean: mean, imageStd: std } = weights.config;
  const out = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const yy = top + y;
        const xx = left + x;
        const inside = yy >= 0 && yy < img.height && xx >= 0 && xx < img.width;
        const v = inside ? img.data[(yy * img.width + xx) * 3 + c] : 0;
        out[(c * S + y) * S + x] = (v / 255 - mean[c]) / std[c];
      }
  return out;
}

/** The processor's views of a picture: the base view, then the tiles of the padded canvas, row by row. */
export function anyresViewsRef(weights: LlavaWeights, img: Rgb): Float32Array[] {
  const pinpoints = weights.config.anyres?.gridPinpoints as Size[];
  const S = weights.config.vision.imageSize;
  const best = selectBestResolution([img.height, img.width], pinpoints);
  const [rh, rw] = patchOutputSize([img.height, img.width], best);
  const resized = pillowResizeRef(img, rw, rh);
  // the whole canvas: black, the picture pasted at (floor(dx / 2), floor(dy / 2))
  const canvas: Rgb = { data: new Uint8Array(best[0] * best[1] * 3), width: best[1], height: best[0] };
  const top = Math.floor((best[0] - rh) / 2);
  const left = Math.floor((best[1] - rw) / 2);
  for (let y = 0; y < rh; y++)
    canvas.data.set(resized.data.subarray(y * rw * 3, (y + 1) * rw * 3), ((top + y) * best[1] + left) * 3);
  const views = [pixelValues(pillowResizeRef(img, S, S), 0, 0, S, weights)];
  for (let i = 0; i < best[0]; i += S)
    for (let j = 0; j < best[1]; j += S) views.push(pixelValues(canvas, i, j, S, weights));
  return views;
}

/**
 * `pack_image_features` for one picture: per-view rows [views][P*P] (vectors of any length d, or numbers
 * wrapped as length-1 vectors) → the packed visual tokens.
 */
export function packImageFeaturesRef(
  perView: readonly Vec[][],
  imageSize: Size,
  pinpoints: readonly Size[],
  tile: number,
  newline: Vec,
): Vec[] {
  const P = Math.round(Math.sqrt(perView[0].length));
  const d = newline.length;
  const best = selectBestResolution(imageSize, pinpoints);
  const rows = best[0] / tile;
  const cols = best[1] / tile;
  // view(rows, cols, P, P, d).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3): grid[c][i*P + y][j*P + x]
  const H = rows * P;
  const W = cols * P;
  const grid = (ch: number, r: number, c: number) => {
    const i = Math.floor(r / P);
    const j = Math.floor(c / P);
    return perView[1 + i * cols + j][(r % P) * P + (c % P)][ch];
  };
  // unpad_image
  const [oh, ow] = imageSize;
  let r0 = 0;
  let r1 = H;
  let c0 = 0;
  let c1 = W;
  if (ow / oh > W / H) {
    const newHeight = Math.trunc(Number((oh * (W / ow)).toFixed(7)));
    const pad = Math.floor((H - newHeight) / 2);
    r0 = pad;
    r1 = H - pad;
  } else {
    const newWidth = Math.trunc(Number((ow * (H / oh)).toFixed(7)));
    const pad = Math.floor((W - newWidth) / 2);
    c0 = pad;
    c1 = W - pad;
  }
  // cat newline as a last column, flatten(1, 2).transpose(0, 1): rows of the grid one after the other
  const out: Vec[] = perView[0].map((v) => Float64Array.from(v));
  for (let r = r0; r < r1; r++) {
    for (let c = c0; c < c1; c++) out.push(Float64Array.from({ length: d }, (_, ch) => grid(ch, r, c)));
    out.push(Float64Array.from(newline));
  }
  return out;
}

/** A picture through LLaVA-NeXT's visual path: its views, the visual tokens [N][textHidden] and their CLS attention (newline: 0). */
export function nextVisualRef(
  weights: LlavaWeights,
  img: Rgb,
): { views: Float32Array[]; features: Vec[]; clsAttention: Vec } {
  const views = anyresViewsRef(weights, img);
  const passes = views.map((v) => visionForwardRef(weights, v));
  const pinpoints = weights.config.anyres?.gridPinpoints as Size[];
  const size: Size = [img.height, img.width];
  const tile = weights.config.vision.imageSize;
  const newline = Float64Array.from(weights.imageNewline?.data ?? []);
  const features = packImageFeaturesRef(
    passes.map((p) => p.features),
    size,
    pinpoints,
    tile,
    newline,
  );
  const cls = packImageFeaturesRef(
    passes.map((p) => Array.from(p.clsAttention, (v) => Float64Array.of(v))),
    size,
    pinpoints,
    tile,
    Float64Array.of(0),
  );
  return { views, features, clsAttention: Float64Array.from(cls, (v) => v[0]) };
}

/** A frame as the video processor prepares it: shortest edge to S (`int(S * long / short)`), centre crop, normalised. */
export function frameViewRef(weights: LlavaWeights, img: Rgb): Float32Array {
  const S = weights.config.vision.imageSize;
  const portrait = img.width <= img.height;
  const short = portrait ? img.width : img.height;
  const long = portrait ? img.height : img.width;
  const newLong = Math.trunc((S * long) / short);
  const [w, h] = portrait ? [S, newLong] : [newLong, S];
  const resized = w === img.width && h === img.height ? img : pillowResizeRef(img, w, h);
  return pixelValues(resized, Math.floor((h - S) / 2), Math.floor((w - S) / 2), S, weights);
}

/** Pools a P x P grid of vectors stride x stride (kernel = stride, floor), row by row. */
function pool2d(rows: readonly Vec[], P: number, stride: number, mode: "average" | "max"): Vec[] {
  const out: Vec[] = [];
  const Q = Math.floor(P / stride);
  const d = rows[0].length;
  for (let y = 0; y < Q; y++)
    for (let x = 0; x < Q; x++) {
      const v = new Float64Array(d).fill(mode === "max" ? Number.NEGATIVE_INFINITY : 0);
      for (let dy = 0; dy < stride; dy++)
        for (let dx = 0; dx < stride; dx++) {
          const r = rows[(y * stride + dy) * P + x * stride + dx];
          for (let c = 0; c < d; c++) v[c] = mode === "max" ? Math.max(v[c], r[c]) : v[c] + r[c] / (stride * stride);
        }
      out.push(v);
    }
  return out;
}

/** A video's frames through LLaVA-NeXT-Video's path: pixel values per frame, the visual tokens and their pooled CLS attention. */
export function videoVisualRef(
  weights: LlavaWeights,
  frames: readonly Rgb[],
): { views: Float32Array[]; features: Vec[]; clsAttention: Vec } {
  const video = weights.config.video;
  if (!video) throw new RangeError("videoVisualRef needs a LLaVA-NeXT-Video config");
  const P = weights.config.vision.imageSize / weights.config.vision.patchSize;
  const views = frames.map((f) => frameViewRef(weights, f));
  const features: Vec[] = [];
  const cls: number[] = [];
  for (const v of views) {
    const pass = visionForwardRef(weights, v);
    features.push(...projectRef(weights, pool2d(pass.selected, P, video.poolStride, video.poolMode)));
    const scores = Array.from(pass.clsAttention, (s) => Float64Array.of(s));
    cls.push(...pool2d(scores, P, video.poolStride, video.poolMode).map((s) => s[0]));
  }
  return { views, features, clsAttention: Float64Array.from(cls) };
}
