/**
 * POST /v1/files stores an image for the caller's tenant and returns its id:
 *   - raw body: `Content-Type: image/png` (or jpeg, webp, application/octet-stream) with a
 *     Content-Length; streamed into R2. Without a Content-Length the body is read up to the cap.
 *   - multipart/form-data with the image in the `file` field (held in memory, up to the cap).
 * GET /v1/files/:id returns the metadata, GET /v1/files/:id/content the bytes; both only
 * within the caller's tenant.
 */
import { Hono } from "hono";
import type { AppEnv } from "../app-types.js";
import { ApiError } from "../http/errors.js";
import { maxImageBytes, tooLarge } from "./limits.js";
import { headFile, readFile, type StoredFile, storeBytes, storeStream } from "./store.js";

/** Room for multipart boundaries and part headers above the image itself. */
const MULTIPART_OVERHEAD = 16 * 1024;

const toJson = (f: StoredFile) => ({
  id: f.id,
  object: "file",
  bytes: f.bytes,
  created_at: Math.floor(f.createdAt / 1000),
  filename: f.filename,
  purpose: "vision",
  content_type: f.contentType,
  sha256: f.sha256,
});

/** Reads a stream of unknown length into memory, refusing it past `cap` bytes. */
async function readCapped(body: ReadableStream<Uint8Array>, cap: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > cap) throw tooLarge(cap);
    parts.push(chunk);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const fileRoutes = new Hono<AppEnv>();

fileRoutes.post("/", async (c) => {
  const cap = maxImageBytes(c.env);
  const tenant = c.get("tenant").id;
  const type = c.req.header("content-type") ?? "";
  const lengthHeader = c.req.header("content-length");
  const length = lengthHeader === undefined ? undefined : Number(lengthHeader);
  if (length !== undefined && !(Number.isInteger(length) && length >= 0))
    throw new ApiError(400, "invalid Content-Length", "invalid_content_length");
  let file: StoredFile;
  if (type.startsWith("multipart/form-data")) {
    if (length !== undefined && length > cap + MULTIPART_OVERHEAD) throw tooLarge(cap);
    const form = await c.req.formData().catch(() => {
      throw new ApiError(400, "the multipart body could not be parsed", "invalid_multipart");
    });
    const part = form.get("file") as File | string | null;
    if (!part || typeof part === "string")
      throw new ApiError(400, "the multipart body has no 'file' part holding the image", "missing_file");
    file = await storeBytes(c.env.FILES, tenant, new Uint8Array(await part.arrayBuffer()), cap, part.name);
  } else {
    const body = c.req.raw.body;
    if (!body || length === 0) throw new ApiError(400, "the body is empty: send the image bytes", "empty_body");
    const filename = c.req.query("filename") ?? "";
    file =
      length === undefined
        ? await storeBytes(c.env.FILES, tenant, await readCapped(body, cap), cap, filename)
        : await storeStream(c.env.FILES, tenant, body, length, cap, filename);
  }
  return c.json(toJson(file), 201);
});

fileRoutes.get("/:id", async (c) => c.json(toJson(await headFile(c.env.FILES, c.get("tenant").id, c.req.param("id")))));

fileRoutes.get("/:id/content", async (c) => {
  const { file, body } = await readFile(c.env.FILES, c.get("tenant").id, c.req.param("id"));
  return new Response(body.body, {
    headers: { "content-type": file.contentType, "content-length": String(file.bytes) },
  });
});
