/**
 * Image bytes in R2 under `tenants/<tenant>/<sha256>`. A body of known length
 * is streamed: it flows through a checker (magic bytes, size cap, SHA-256)
 * into a temporary object `tmp/<uuid>`, then is copied, again as a stream, to
 * its content address; the temporary object is deleted whatever happens, so a
 * failed check or copy leaves nothing behind. Nothing holds the whole image in
 * memory. Which files exist is the tenant limiter's to say (file-index.ts).
 */
import { ApiError } from "../http/errors.js";
import { tooLarge, unsupportedType } from "./limits.js";
import { type ImageType, SNIFF_BYTES, sniffImageType } from "./magic.js";

/** An image checked and stored in R2, not yet recorded. */
export interface StoredBytes {
  key: string;
  sha256: string;
  bytes: number;
  contentType: ImageType;
}

export const objectKey = (tenantId: string, sha256: string) => `tenants/${tenantId}/${sha256}`;

const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

/** The type of a whole image in memory (415 otherwise), after the size check (413). */
export function checkImage(bytes: Uint8Array, cap: number): ImageType {
  if (bytes.length > cap) throw tooLarge(cap);
  const contentType = sniffImageType(bytes.subarray(0, SNIFF_BYTES));
  if (!contentType) throw unsupportedType();
  return contentType;
}

/** The SHA-256 of bytes in memory, as hex. */
export async function sha256Of(bytes: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", bytes));
}

/** Stores a checked image held in memory at its content address (once). */
export async function putBytes(
  bucket: R2Bucket,
  tenantId: string,
  bytes: Uint8Array,
  contentType: ImageType,
): Promise<StoredBytes> {
  const sha256 = await sha256Of(bytes);
  const key = objectKey(tenantId, sha256);
  if (!(await bucket.head(key))) await bucket.put(key, bytes, { httpMetadata: { contentType } });
  return { key, sha256, bytes: bytes.length, contentType };
}

/** Streams a body of declared length into R2, checking it on the way (415, 413, 400 for a short body). */
export async function putStream(
  bucket: R2Bucket,
  tenantId: string,
  body: ReadableStream<Uint8Array>,
  length: number,
  cap: number,
): Promise<StoredBytes> {
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
    try {
      await bucket.put(tmpKey, body.pipeThrough(checker).pipeThrough(new FixedLengthStream(length)));
    } catch (err) {
      if (failure) throw failure;
      if (seen !== length)
        throw new ApiError(400, `the body ended after ${seen} of its declared ${length} bytes`, "incomplete_body");
      throw err;
    }
    await hashWriter.close();
    const sha256 = hex(await digest.digest);
    const key = objectKey(tenantId, sha256);
    if (!(await bucket.head(key))) {
      const tmp = await bucket.get(tmpKey);
      if (!tmp) throw new Error(`the temporary upload ${tmpKey} vanished`);
      await bucket.put(key, tmp.body.pipeThrough(new FixedLengthStream(tmp.size)), {
        httpMetadata: { contentType: contentType as ImageType },
      });
    }
    return { key, sha256, bytes: length, contentType: contentType as ImageType };
  } finally {
    await bucket.delete(tmpKey);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
