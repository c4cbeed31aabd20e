/** The errors for images the edge refuses before storing or forwarding them. */
import { ApiError } from "../http/errors.js";

export const tooLarge = (cap: number) =>
  new ApiError(413, `the image is larger than the limit of ${cap} bytes (MAX_IMAGE_BYTES)`, "image_too_large");

export const unsupportedType = () =>
  new ApiError(415, "unsupported image type: send a PNG, JPEG, WebP or GIF image", "unsupported_image_type");
