/**
 * Images in R2 under `tenants/<tenant>/<sha256>`; a file id is `file-<sha256>`
 * and is only ever resolved inside the caller's own tenant space, so another
 * tenant's id is simply not found.
 *
 * A body of known length is streamed: it flows through a checker (magic bytes,
 * size cap, SHA-256) into a temporary object, then is copied, again as a
 * stream, to its content address. Nothing holds the whole image in memory.
 */
import { ApiError } from "../http/errors.js";
import { tooLarge, unsupportedType } from "./limits.js";
import { type ImageType, SNIFF_BYTES, sniffImageType } from "./magic.js";

export interface StoredFile {
  id: string;
  bytes: number;
  contentType: ImageType;
  sha256: string;
  createdAt: number;
  filename: string;
}

const ID_SHAPE = /^file-([0-9a-f]{64})$/;

const objectKey = (tenantId: string, sha256: string) => `tenants/${tenantId}/${sha256}`;

const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

/** True when the string looks like a file id. */
export const isFileId = (s: string) => ID_SHAPE.test(s);

/** Checks a whole image in memory (data: URLs, multipart parts) and stores it. */
export async function storeBytes(
  bucket: R2Bucket,
  tenantId: string,
  bytes: Uint8Array,
  cap: number,
  filename = "",
): Promise<StoredFile> {
  if (bytes.length > cap) throw tooLarge(cap);
  const contentType = sniffImageType(bytes.subarray(0, SNIFF_BYTES));
  if (!contentType) throw unsupportedType();
  const sha256 = hex(await crypto.subtle.digest("SHA-256", bytes));
  const file = { id: `file-${sha256}`, bytes: bytes.length, contentType, sha256, createdAt: Date.now(), filename };
  if (!(await bucket.head(objectKey(tenantId, sha256))))
    await bucket.put(objectKey(tenantId, sha256), bytes, metadataOf(file));
  return file;
}

/** Streams a body of declared length into R2, checking it on the way. */
export async function storeStream(
  bucket: R2Bucket,
  tenantId: string,
  body: ReadableStream<Uint8Array>,
  length: number,
  cap: number,
  filename = "",
): Promise<StoredFile> {
  if (length > cap) throw tooLarge(cap);
  const digest = new crypto.DigestStream("SHA-256");
  const hashWriter = digest.getWriter();
  let head: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  let contentType: ImageType | undefined;
  let seen = 0;
  let failure: ApiError | undefined;
  const fail = (e: ApiError): never => {
    failure = e;
    throw e;
  };
  const checker = new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      seen += chunk.length;
      if (seen > cap) fail(tooLarge(cap));
      if (!contentType) {
        if (head.length < SNIFF_BYTES) head = concat(head, chunk.subarray(0, SNIFF_BYTES - head.length));
        if (head.length >= SNIFF_BYTES) contentType = sniffImageType(head) ?? fail(unsupportedType());
      }
      await hashWriter.write(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      if (!contentType) contentType = sniffImageType(head) ?? fail(unsupportedType());
    },
  });
  const tmpKey = `tmp/${crypto.randomUUID()}`;
  try {
    await bucket.put(tmpKey, body.pipeThrough(checker).pipeThrough(new FixedLengthStream(length)));
  } catch (err) {
    await bucket.delete(tmpKey);
    if (failure) throw failure;
    if (seen !== length)
      throw new ApiError(400, `the body ended after ${seen} of its declared ${length} bytes`, "incomplete_body");
    throw err;
  }
  await hashWriter.close();
  const sha256 = hex(await digest.digest);
  const file = {
    id: `file-${sha256}`,
    bytes: length,
    contentType: contentType as ImageType,
    sha256,
    createdAt: Date.now(),
    filename,
  };
  const key = objectKey(tenantId, sha256);
  if (!(await bucket.head(key))) {
    const tmp = await bucket.get(tmpKey);
    if (!tmp) throw new Error(`the temporary upload ${tmpKey} vanished`);
    await bucket.put(key, tmp.body.pipeThrough(new FixedLengthStream(tmp.size)), metadataOf(file));
  }
  await bucket.delete(tmpKey);
  return file;
}

function metadataOf(f: StoredFile): R2PutOptions {
  return {
    httpMetadata: { contentType: f.contentType },
    customMetadata: { filename: f.filename, createdAt: String(f.createdAt) },
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function fileOf(obj: R2Object, sha256: string): StoredFile {
  return {
    id: `file-${sha256}`,
    bytes: obj.size,
    contentType: obj.httpMetadata?.contentType as ImageType,
    sha256,
    createdAt: Number(obj.customMetadata?.createdAt ?? obj.uploaded.getTime()),
    filename: obj.customMetadata?.filename ?? "",
  };
}

const notFound = (id: string) => new ApiError(404, `no file ${id} for this API key's tenant`, "file_not_found");

/** A file's metadata in the tenant's space; 404 for a malformed, unknown or other tenant's id. */
export async function headFile(bucket: R2Bucket, tenantId: string, id: string): Promise<StoredFile> {
  const sha = ID_SHAPE.exec(id)?.[1];
  const obj = sha ? await bucket.head(objectKey(tenantId, sha)) : null;
  if (!obj || !sha) throw notFound(id);
  return fileOf(obj, sha);
}

/** A file's bytes in the tenant's space; 404 otherwise. */
export async function readFile(
  bucket: R2Bucket,
  tenantId: string,
  id: string,
): Promise<{ file: StoredFile; body: R2ObjectBody }> {
  const sha = ID_SHAPE.exec(id)?.[1];
  const obj = sha ? await bucket.get(objectKey(tenantId, sha)) : null;
  if (!obj || !sha) throw notFound(id);
  return { file: fileOf(obj, sha), body: obj };
}
