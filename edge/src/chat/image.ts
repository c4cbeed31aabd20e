/**
 * The bytes of a request's image: from a `data:image/...;base64,` URL (checked
 * like an upload: size cap, magic bytes) or from an uploaded file id, looked
 * up only in the caller's own tenant space.
 */

import type { Env } from "../env.js";
import { tooLarge, unsupportedType } from "../files/limits.js";
import { sniffImageType } from "../files/magic.js";
import { isFileId, openFile } from "../files/tenant-files.js";
import { ApiError, invalidParam } from "../http/errors.js";

export interface ResolvedImage {
  bytes: Uint8Array;
  mediaType: string;
}

const DATA_URL = /^data:([a-z]+\/[a-z0-9.+-]+)?(;[a-z0-9=-]+)*;base64,/i;

export async function resolveImage(url: string, env: Env, tenantId: string, cap: number): Promise<ResolvedImage> {
  const m = DATA_URL.exec(url);
  if (m) {
    const b64 = url.slice(m[0].length);
    if (Math.floor((b64.length * 3) / 4) - 2 > cap) throw tooLarge(cap);
    let bin: string;
    try {
      bin = atob(b64);
    } catch {
      throw invalidParam("image_url.url", "the data: URL is not valid base64");
    }
    if (bin.length === 0) throw invalidParam("image_url.url", "the data: URL holds no bytes");
    const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
    if (bytes.length > cap) throw tooLarge(cap);
    const type = sniffImageType(bytes);
    if (!type) throw unsupportedType();
    return { bytes, mediaType: type };
  }
  if (isFileId(url)) {
    const { file, body } = await openFile(env, tenantId, url);
    return { bytes: new Uint8Array(await body.arrayBuffer()), mediaType: file.contentType };
  }
  if (url.startsWith("data:")) throw invalidParam("image_url.url", "only base64 data: URLs are accepted");
  throw new ApiError(
    400,
    "image_url.url must be a data:image/...;base64 URL or the id of an uploaded file (file-<sha256> from POST /v1/files); remote URLs are not fetched",
    "invalid_image_url",
    "image_url.url",
  );
}
