/**
 * Image type by magic bytes: PNG, JPEG, WebP and GIF (GIF87a and GIF89a; the GPU
 * service reads an animated one's first frame), the formats OpenAI's API takes;
 * and video type: MP4 or WebM. Nothing is decoded here.
 */

export type ImageType = "image/png" | "image/jpeg" | "image/webp" | "image/gif";

/** Bytes needed to decide. */
export const SNIFF_BYTES = 12;

export function sniffImageType(head: Uint8Array): ImageType | undefined {
  const at = (i: number, ...bytes: number[]) => bytes.every((b, k) => head[i + k] === b);
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "image/png";
  if (at(0, 0xff, 0xd8, 0xff)) return "image/jpeg";
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return "image/webp";
  // "GIF87a" or "GIF89a"
  if (at(0, 0x47, 0x49, 0x46, 0x38) && (at(4, 0x37, 0x61) || at(4, 0x39, 0x61))) return "image/gif";
  return undefined;
}

export type VideoType = "video/mp4" | "video/webm";

/** Video type by magic bytes: MP4 (an ISO BMFF `ftyp` box first) or WebM (an EBML header of doctype webm). */
export function sniffVideoType(head: Uint8Array): VideoType | undefined {
  const ascii = (from: number, to: number) => String.fromCharCode(...head.subarray(from, to));
  if (head.length >= 12 && ascii(4, 8) === "ftyp") return "video/mp4";
  if (head.length >= 4 && head[0] === 0x1a && head[1] === 0x45 && head[2] === 0xdf && head[3] === 0xa3)
    return ascii(4, Math.min(head.length, 64)).includes("webm") ? "video/webm" : undefined;
  return undefined;
}
