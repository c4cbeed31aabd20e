/**
 * LLaVA image preprocessing with sharp: decode (PNG, JPEG, WebP), pad to a
 * square with the CLIP mean colour, resize to the tower's size, rescale to
 * [0, 1] and normalise with the CLIP mean/std → float32 [1, 3, S, S].
 * Anything that is not a decodable image of sane size is an InvalidRequestError.
 */
import sharp from "sharp";
import { InvalidRequestError } from "./types.js";

export interface ImageLimits {
  /** Largest encoded size accepted, in bytes. */
  maxBytes: number;
  /** Largest width * height accepted. */
  maxPixels: number;
}

export const DEFAULT_IMAGE_LIMITS: ImageLimits = { maxBytes: 20 * 1024 * 1024, maxPixels: 40_000_000 };

export interface PreprocessSpec {
  imageSize: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/** What the bytes start with: "png" | "jpeg" | "webp" | undefined. */
export function sniffImageType(bytes: Uint8Array): "png" | "jpeg" | "webp" | undefined {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47)
    return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  if (
    bytes.length >= 12 &&
    String.fromCharCode(...bytes.subarray(0, 4)) === "RIFF" &&
    String.fromCharCode(...bytes.subarray(8, 12)) === "WEBP"
  )
    return "webp";
  return undefined;
}

export async function preprocessImage(
  bytes: Uint8Array,
  spec: PreprocessSpec,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<Float32Array> {
  if (bytes.length === 0) throw new InvalidRequestError("the image is empty");
  if (bytes.length > limits.maxBytes)
    throw new InvalidRequestError(`the image is ${bytes.length} bytes; the limit is ${limits.maxBytes}`);
  if (!sniffImageType(bytes)) throw new InvalidRequestError("the image is not a PNG, JPEG or WebP file");
  let width: number;
  let height: number;
  let rgb: Buffer;
  try {
    const img = sharp(bytes, { limitInputPixels: limits.maxPixels, failOn: "error" })
      .removeAlpha()
      .toColourspace("srgb");
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    width = info.width;
    height = info.height;
    rgb = data;
    if (info.channels !== 3) {
      const fixed = await sharp(data, { raw: { width, height, channels: info.channels } })
        .toColourspace("srgb")
        .removeAlpha()
        .raw()
        .toBuffer();
      rgb = fixed;
    }
  } catch (err) {
    const msg = (err as Error).message;
    if (/pixel limit/i.test(msg)) throw new InvalidRequestError(`the image has more than ${limits.maxPixels} pixels`);
    throw new InvalidRequestError(`the image could not be decoded: ${msg}`);
  }
  // pad to a square with the mean colour, then resize (bicubic) to the tower's size
  const side = Math.max(width, height);
  const fill = spec.mean.map((m) => Math.round(m * 255));
  const square = await sharp(rgb, { raw: { width, height, channels: 3 } })
    .extend({
      top: Math.floor((side - height) / 2),
      bottom: Math.ceil((side - height) / 2),
      left: Math.floor((side - width) / 2),
      right: Math.ceil((side - width) / 2),
      background: { r: fill[0], g: fill[1], b: fill[2] },
    })
    .resize(spec.imageSize, spec.imageSize, { kernel: "cubic", fit: "fill" })
    .raw()
    .toBuffer();
  const S = spec.imageSize;
  const out = new Float32Array(3 * S * S);
  for (let i = 0; i < S * S; i++) {
    for (let c = 0; c < 3; c++) out[c * S * S + i] = (square[i * 3 + c] / 255 - spec.mean[c]) / spec.std[c];
  }
  return out;
}
