/**
 * POST /v1/files stores an image for the caller's tenant and returns its id:
 *   - raw body: `Content-Type: image/png` (or jpeg, webp, gif, application/octet-stream) with a
 *     Content-Length; streamed into R2. Without a Content-Length the body is read up to the cap.
 *   - multipart/form-data with the image in the `file` field (read up to the cap).
 * Every upload counts against the tenant's storage quota and expires after FILE_TTL_SECONDS.
 * GET /v1/files/:id returns the metadata, GET /v1/files/:id/content the bytes, DELETE
 * /v1/files/:id removes the file; all only within the caller's tenant.
 */
import { Hono } from "hono";
import type { AppEnv } from "../app-types.js";
import { settingsOf } from "../config/settings.js";
import { declaredLength, readCapped } from "../http/body.js";
import { ApiError } from "../http/errors.js";
import type { FileRecord } from "../limits/file-index.js";
import { tooLarge } from "./limits.js";
import { checkImage, putBytes, putStream, sha256Of } from "./store.js";
import { deleteFile, fileIdOf, findFile, openFile, uploadUnderQuota } from "./tenant-files.js";

/** Room for multipart boundaries and part headers above the image itself. */
const MULTIPART_OVERHEAD = 16 * 1024;

const toJson = (f: FileRecord) => ({
  id: fileIdOf(f.sha256),
  object: "file",
  bytes: f.bytes,
  created_at: Math.floor(f.createdAt / 1000),
  expires_at: Math.floor(f.expiresAt / 1000),
  filename: f.filename,
  purpose: "vision",
  content_type: f.contentType,
  sha256: f.sha256,
});

/** A file name as given, without control characters, at most 255 characters. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it removes
const cleanFilename = (name: string) => name.replace(/[\u0000-\u001f\u007f]/g, "").slice(0, 255);

/** The image part of a multipart body read into memory (at most the cap plus MULTIPART_OVERHEAD). */
async function multipartImage(req: Request, cap: number): Promise<{ bytes: Uint8Array; filename: string }> {
  const limit = cap + MULTIPART_OVERHEAD;
  const length = declaredLength(req);
  if (length !== undefined && length > limit) throw tooLarge(cap);
  const raw = await readCapped(req.body, limit, () => tooLarge(cap));
  const form = await new Request("http://multipart.invalid/", {
    method: "POST",
    headers: { "content-type": req.headers.get("content-type") ?? "" },
    body: raw,
  })
    .formData()
    .catch(() => {
      throw new ApiError(400, "the multipart body could not be parsed", "invalid_multipart");
    });
  const part = form.get("file") as File | string | null;
  if (!part || typeof part === "string")
    throw new ApiError(400, "the multipart body has no 'file' part holding the image", "missing_file");
  return { bytes: new Uint8Array(await part.arrayBuffer()), filename: part.name };
}

export const fileRoutes = new Hono<AppEnv>();

fileRoutes.post("/", async (c) => {
  const cap = settingsOf(c.env).maxImageBytes;
  const tenant = c.get("tenant");
  const type = c.req.header("content-type") ?? "";
  const length = declaredLength(c.req.raw);
  const body = c.req.raw.body;
  let file: FileRecord;
  if (length !== undefined && length > 0 && body && !type.startsWith("multipart/form-data")) {
    if (length > cap) throw tooLarge(cap);
    const filename = cleanFilename(c.req.query("filename") ?? "");
    file = await uploadUnderQuota(c.env, tenant, { bytes: length, filename }, () =>
      putStream(c.env.FILES, tenant.id, body, length, cap),
    );
  } else {
    const { bytes, filename } = type.startsWith("multipart/form-data")
      ? await multipartImage(c.req.raw, cap)
      : { bytes: await readCapped(body, cap, () => tooLarge(cap)), filename: c.req.query("filename") ?? "" };
    if (bytes.length === 0) throw new ApiError(400, "the body is empty: send the image bytes", "empty_body");
    const contentType = checkImage(bytes, cap);
    const upload = { bytes: bytes.length, filename: cleanFilename(filename), sha256: await sha256Of(bytes) };
    file = await uploadUnderQuota(c.env, tenant, upload, () => putBytes(c.env.FILES, tenant.id, bytes, contentType));
  }
  return c.json(toJson(file), 201);
});

fileRoutes.get("/:id", async (c) => c.json(toJson(await findFile(c.env, c.get("tenant").id, c.req.param("id")))));

fileRoutes.get("/:id/content", async (c) => {
  const { file, body } = await openFile(c.env, c.get("tenant").id, c.req.param("id"));
  return new Response(body.body, {
    headers: { "content-type": file.contentType, "content-length": String(file.bytes) },
  });
});

fileRoutes.delete("/:id", async (c) => {
  const id = c.req.param("id");
  await deleteFile(c.env, c.get("tenant").id, id);
  return c.json({ id, object: "file", deleted: true });
});
