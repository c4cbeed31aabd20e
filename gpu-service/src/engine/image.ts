/**
 * LLaVA image preprocessing (image_aspect_ratio "pad", then CLIPImageProcessor):
 * decode (PNG, JPEG, WebP, GIF; alpha dropped), pad to a square with the mean
 * colour as LLaVA's expand2square does, bicubic resize to the tower's size,
 * rescale to [0, 1] and normalise with the mean and std → float32 [1, 3, S, S].
 *
 * The geometry is checked from the header before anything decodes
 * (image-format.ts), and memory is bounded by the tower's size, not by the
 * picture's: the padded square is never built (pad-resize.ts), and a picture
 * more than PRESHRINK_GAP times the tower's size is first shrunk by libvips,
 * streaming, to PRESHRINK_GAP times it (as Pillow's reducing_gap does), so the
 * final bicubic filter still spans many of its pixels.
 * Anything that is not a decodable image within the limits is an InvalidRequestError.
 */
import sharp, { type Sharp } from "sharp";
import { InvalidRequestError } from "./errors.js";
import { DEFAULT_IMAGE_LIMITS, type ImageGeometry, type ImageLimits, inspectImage } from "./image-format.js";
import { padToSquareAndResize, type RgbPicture } from "./pad-resize.js";

export {
  ACCEPTED_FORMATS,
  DEFAULT_IMAGE_LIMITS,
  type ImageLimits,
  inspectImage,
  sniffImageType,
} from "./image-format.js";

export interface PreprocessSpec {
  imageSize: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/** Pictures whose longest side exceeds this many tower sizes are shrunk to it before the exact resize. */
export const PRESHRINK_GAP = 3;

/** LLaVA's fill colour: `tuple(int(x * 255) for x in image_processor.image_mean)` (truncated, not rounded). */
export function padColour(mean: readonly [number, number, number]): [number, number, number] {
  return [Math.trunc(mean[0] * 255), Math.trunc(mean[1] * 255), Math.trunc(mean[2] * 255)];
}

/** Decoded RGB pixels of a sharp pipeline (any alpha dropped, any colour space turned into 8-bit sRGB). */
async function rgbOf(image: Sharp): Promise<RgbPicture> {
  const { data, info } = await image.removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== info.width * info.height * 3)
    throw new Error(`decoded to ${info.channels} channels, ${data.length} bytes for ${info.width}x${info.height}`);
  return { data, width: info.width, height: info.height };
}

/**
 * The picture's pixels: whole when its longest side is within PRESHRINK_GAP
 * tower sizes, else shrunk (aspect kept per axis) so that it is. libvips streams
 * the decode into the shrink, except for a picture with alpha, which is decoded
 * whole first (within the pixel limit): libvips would premultiply by alpha while
 * shrinking, and LLaVA drops the alpha channel before anything else.
 */
async function decode(bytes: Uint8Array, g: ImageGeometry, size: number, limits: ImageLimits): Promise<RgbPicture> {
  const open = () => sharp(bytes, { limitInputPixels: limits.maxPixels, failOn: "error" });
  const side = Math.max(g.width, g.height);
  if (side <= PRESHRINK_GAP * size) return rgbOf(open());
  const ratio = (PRESHRINK_GAP * size) / side;
  const width = Math.max(1, Math.round(g.width * ratio));
  const height = Math.max(1, Math.round(g.height * ratio));
  const shrink = { fit: "fill", kernel: "cubic" } as const;
  if (!g.hasAlpha) return rgbOf(open().resize(width, height, shrink));
  const whole = await rgbOf(open());
  return rgbOf(
    sharp(whole.data, { raw: { width: whole.width, height: whole.height, channels: 3 } }).resize(width, height, shrink),
  );
}

/** A decoded picture and the size the resizes are computed from (its header's, when it was shrunk on decoding). */
export interface DecodedPicture {
  picture: RgbPicture;
  /** What the header says (checked against the limits). */
  geometry: ImageGeometry;
  declaredWidth: number;
  declaredHeight: number;
}

/**
 * Checks an image's header against the limits and decodes it to RGB, shrunk first (see `decode`) when its
 * longest side exceeds PRESHRINK_GAP times `largestOutput`, the longest side any resize of it will produce
 * (or a function of the header's geometry giving it).
 */
export async function decodePicture(
  bytes: Uint8Array,
  largestOutput: number | ((geometry: ImageGeometry) => number),
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<DecodedPicture> {
  const geometry = await inspectImage(bytes, limits);
  const largest = typeof largestOutput === "number" ? largestOutput : largestOutput(geometry);
  let picture: RgbPicture;
  try {
    picture = await decode(bytes, geometry, largest, limits);
  } catch (err) {
    throw new InvalidRequestError(`the image could not be decoded: ${(err as Error).message}`);
  }
  const shrunk = picture.width !== geometry.width || picture.height !== geometry.height;
  // unshrunk, the decoded size is the truth (it equals the header's for every accepted format)
  return {
    picture,
    geometry,
    declaredWidth: shrunk ? geometry.width : picture.width,
    declaredHeight: shrunk ? geometry.height : picture.height,
  };
}

/** Interleaved 8-bit RGB of size x size → float32 [3, size, size], rescaled by 1/255 and normalised. */
export function normalise(rgb: Uint8Array, size: number, spec: Pick<PreprocessSpec, "mean" | "std">): Float32Array {
  const n = size * size;
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) out[c * n + i] = (rgb[i * 3 + c] / 255 - spec.mean[c]) / spec.std[c];
  }
  return out;
}

/** Bytes of an image → the tower's pixel values, float32 [1, 3, S, S], LLaVA's recipe. */
export async function preprocessImage(
  bytes: Uint8Array,
  spec: PreprocessSpec,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<Float32Array> {
  return (await preprocessPicture(bytes, spec, limits)).pixelValues;
}

/** `preprocessImage`, with the header's geometry beside the pixel values (the header is read once). */
export async function preprocessPicture(
  bytes: Uint8Array,
  spec: PreprocessSpec,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<{ pixelValues: Float32Array; geometry: ImageGeometry }> {
  const S = spec.imageSize;
  const { picture, geometry, declaredWidth, declaredHeight } = await decodePicture(bytes, S, limits);
  const square = padToSquareAndResize(picture, declaredWidth, declaredHeight, S, padColour(spec.mean));
  return { pixelValues: normalise(square, S, spec), geometry };
}
