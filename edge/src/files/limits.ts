/** The image size cap (MAX_IMAGE_BYTES, default 10 MiB) and the errors for bad images. */
import type { Env } from "../env.js";
import { ApiError } from "../http/errors.js";

export const DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024;

export function maxImageBytes(env: Env): number {
  const n = Number(env.MAX_IMAGE_BYTES);
  return Number.isInteger(n) && n > 0 ? n : DEFAULT_MAX_IMAGE_BYTES;
}

export const tooLarge = (cap: number) =>
  new ApiError(413, `the image is larger than the limit of ${cap} bytes`, "image_too_large");

export const unsupportedType = () =>
  new ApiError(415, "unsupported image type: send a PNG, JPEG or WebP image", "unsupported_image_type");
