/**
 * What an image is before anything decodes it: its format from the magic bytes
 * and its geometry from the header, checked against the limits. The GPU
 * service's validation (before a request queues) and the engine (before it
 * decodes) both call `inspectImage`, so they accept exactly the same images.
 * Accepted: PNG, JPEG, WebP and GIF (the first frame of an animated GIF or WebP),
 * the formats OpenAI's API accepts.
 */
import sharp, { type Metadata } from "sharp";
import { InvalidRequestError } from "./errors.js";

export type ImageType = "png" | "jpeg" | "webp" | "gif";

/** The accepted formats, as messages name them. */
export const ACCEPTED_FORMATS = "PNG, JPEG, WebP or GIF";

export interface ImageLimits {
  /** Largest encoded size accepted, in bytes. */
  maxBytes: number;
  /** Largest width * height accepted. */
  maxPixels: number;
  /** Longest side accepted, in pixels. */
  maxSide: number;
  /** Largest ratio of the long side to the short side (20 means 20:1). */
  maxAspectRatio: number;
}

export const DEFAULT_IMAGE_LIMITS: ImageLimits = {
  maxBytes: 20 * 1024 * 1024,
  maxPixels: 40_000_000,
  maxSide: 8192,
  maxAspectRatio: 20,
};

export interface ImageGeometry {
  type: ImageType;
  width: number;
  height: number;
  /** The decoded picture carries an alpha channel (dropped, as PIL's convert("RGB") does). */
  hasAlpha: boolean;
}

const ascii = (bytes: Uint8Array, from: number, to: number) => String.fromCharCode(...bytes.subarray(from, to));

/** What the bytes start with, or undefined for anything but the accepted formats. */
export function sniffImageType(bytes: Uint8Array): ImageType | undefined {
  if (bytes.length >= 8 && bytes[0] === 0x89 && ascii(bytes, 1, 4) === "PNG") return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  if (bytes.length >= 12 && ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 12) === "WEBP") return "webp";
  if (bytes.length >= 6 && (ascii(bytes, 0, 6) === "GIF87a" || ascii(bytes, 0, 6) === "GIF89a")) return "gif";
  return undefined;
}

/**
 * Checks size, format and geometry from the header alone (no pixel is decoded):
 * bytes, width * height, the longest side and the aspect ratio, each against its
 * limit. Throws InvalidRequestError naming the bound that was passed.
 */
export async function inspectImage(
  bytes: Uint8Array,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<ImageGeometry> {
  if (bytes.length === 0) throw new InvalidRequestError("the image is empty");
  if (bytes.length > limits.maxBytes)
    throw new InvalidRequestError(`the image is ${bytes.length} bytes; the limit is ${limits.maxBytes}`);
  const type = sniffImageType(bytes);
  if (!type) throw new InvalidRequestError(`the image is not a ${ACCEPTED_FORMATS} file`);
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new InvalidRequestError(`the image could not be read: ${(err as Error).message}`);
  }
  const { width, height } = meta;
  if (meta.format !== type) throw new InvalidRequestError(`the image starts like ${type} but reads as ${meta.format}`);
  if (!width || !height) throw new InvalidRequestError("the image has no width or height");
  const size = `${width}x${height}`;
  const long = Math.max(width, height);
  const short = Math.min(width, height);
  if (long > limits.maxSide)
    throw new InvalidRequestError(`the image is ${size}: its longest side may be at most ${limits.maxSide} pixels`);
  if (long > short * limits.maxAspectRatio)
    throw new InvalidRequestError(
      `the image is ${size}: its aspect ratio ${(long / short).toFixed(1)}:1 is beyond the limit of ${limits.maxAspectRatio}:1`,
    );
  if (width * height > limits.maxPixels)
    throw new InvalidRequestError(`the image is ${size} = ${width * height} pixels; the limit is ${limits.maxPixels}`);
  return { type, width, height, hasAlpha: meta.hasAlpha === true };
}
