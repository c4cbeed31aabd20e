/**
 * The bytes of a request's video: a `data:video/mp4;base64,` (or webm) URL, checked by size and magic
 * bytes, or a list of frames, each resolved as a picture (a data: URL or an uploaded file's id). The edge
 * never decodes: the GPU service probes the clip (duration, frames) and answers INVALID_ARGUMENT, which
 * the edge relays as a 400. Every refusal of a video is a 400 (`invalid_video`, `video_too_large`).
 */
import type { Env } from "../env.js";
import { sniffVideoType } from "../files/magic.js";
import { isFileId } from "../files/tenant-files.js";
import { ApiError } from "../http/errors.js";
import { resolveImage } from "./image.js";

export interface ResolvedVideo {
  data?: Uint8Array;
  frames?: Uint8Array[];
  mediaType: string;
}

const DATA_URL = /^data:([a-z]+\/[a-z0-9.+-]+)?(;[a-z0-9=-]+)*;base64,/i;

const invalidVideo = (message: string, param: string) => new ApiError(400, message, "invalid_video", param);

/** A data: URL's video bytes, refused when over `cap`, not base64, empty, or neither MP4 nor WebM. */
export function resolveVideoUrl(url: string, cap: number): ResolvedVideo {
  const param = "video_url.url";
  const m = DATA_URL.exec(url);
  if (!m) {
    if (isFileId(url))
      throw invalidVideo(
        "uploads hold pictures only: send the clip as a data:video/mp4;base64 URL, or its frames as a video part",
        param,
      );
    throw invalidVideo(
      "video_url.url must be a data:video/mp4 or data:video/webm base64 URL; remote URLs are not fetched",
      param,
    );
  }
  const b64 = url.slice(m[0].length);
  const tooLarge = () =>
    new ApiError(400, `the video is larger than the limit of ${cap} bytes (MAX_VIDEO_BYTES)`, "video_too_large", param);
  if (Math.floor((b64.length * 3) / 4) - 2 > cap) throw tooLarge();
  let bin: string;
  try {
    bin = atob(b64);
  } catch {
    throw invalidVideo("the data: URL is not valid base64", param);
  }
  if (bin.length === 0) throw invalidVideo("the video is empty", param);
  if (bin.length > cap) throw tooLarge();
  const data = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
  const mediaType = sniffVideoType(data);
  if (!mediaType) throw invalidVideo("the video is not an MP4 or WebM file", param);
  return { data, mediaType };
}

/** A video's frames: at least one and at most `maxFrames`, each a picture as an image_url part takes it. */
export async function resolveFrames(
  urls: readonly string[],
  env: Env,
  tenantId: string,
  limits: { maxImageBytes: number; maxFrames: number },
): Promise<ResolvedVideo> {
  if (urls.length === 0) throw invalidVideo("the video has no frames", "video");
  if (urls.length > limits.maxFrames)
    throw invalidVideo(
      `the video has ${urls.length} frames; the limit is ${limits.maxFrames} (MAX_VIDEO_FRAMES)`,
      "video",
    );
  const frames: Uint8Array[] = [];
  for (const [i, url] of urls.entries()) {
    try {
      frames.push((await resolveImage(url, env, tenantId, limits.maxImageBytes)).bytes);
    } catch (err) {
      // a frame that is no picture, or too large, is a bad video; a missing upload stays a 404
      if (err instanceof ApiError && err.status !== 404)
        throw invalidVideo(`video frame ${i}: ${err.message}`, `video[${i}]`);
      throw err;
    }
  }
  return { frames, mediaType: "image/*" };
}
