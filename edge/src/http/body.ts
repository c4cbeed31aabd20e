/**
 * Request bodies are read through a counting reader, never whole and unbounded:
 * a declared Content-Length over the cap is refused before a byte is read, and
 * a body that passes the cap while it streams in is kept no further. Either
 * way the answer is a 413 that names the limit and the variable that sets it.
 *
 * A body of unknown length that passes the cap is read on and dropped, up to
 * DRAIN_BYTES more, before it is cancelled: a connection whose request body
 * was left half read cannot carry the next request (wrangler dev's local proxy
 * then answered that next request 503), and a body a little too large is the
 * common case. Nothing drained is kept.
 */
import { ApiError } from "./errors.js";

/** How far past the cap a body of unknown length is read (and dropped) before it is cut. */
export const DRAIN_BYTES = 4 * 1024 * 1024;

/** Deepest nesting of arrays and objects a JSON body may have. */
export const MAX_JSON_DEPTH = 64;

/** The 413 for a body over `cap` bytes. */
export const bodyTooLarge = (cap: number, setting: string, what = "the request body") =>
  new ApiError(413, `${what} is larger than the limit of ${cap} bytes (${setting})`, "request_too_large");

/** The declared Content-Length: undefined when absent; a 400 when it is not a length. */
export function declaredLength(req: Request): number | undefined {
  const header = req.headers.get("content-length");
  if (header === null) return undefined;
  if (!/^\d{1,15}$/.test(header.trim())) throw new ApiError(400, "invalid Content-Length", "invalid_content_length");
  return Number(header.trim());
}

/**
 * Reads a stream into memory, refusing it (413 from `tooLarge`) once it has
 * passed `cap` bytes: nothing past the cap is kept, the rest is dropped up to
 * DRAIN_BYTES and the stream cancelled after that.
 */
export async function readCapped(
  body: ReadableStream<Uint8Array> | null,
  cap: number,
  tooLarge: () => ApiError,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > cap + DRAIN_BYTES) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      if (total <= cap) parts.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  if (total > cap) throw tooLarge();
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A request's whole body, at most `cap` bytes (413 naming `setting` otherwise). */
export async function readBody(req: Request, cap: number, setting: string): Promise<Uint8Array> {
  const length = declaredLength(req);
  if (length !== undefined && length > cap) throw bodyTooLarge(cap, setting);
  return readCapped(req.body, cap, () => bodyTooLarge(cap, setting));
}

/** How deeply arrays and objects nest in JSON text (strings skipped); stops counting past `limit`. */
export function jsonDepth(text: string, limit = MAX_JSON_DEPTH): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c)
        i++; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x5b || ch === 0x7b) {
      depth++;
      if (depth > max) max = depth;
      if (max > limit) return max;
    } else if (ch === 0x5d || ch === 0x7d) depth--;
  }
  return max;
}

/**
 * A JSON request body: at most `cap` bytes (413), UTF-8, at most MAX_JSON_DEPTH
 * deep, and valid JSON (400 `invalid_json` saying what is wrong).
 */
export async function readJson(req: Request, cap: number, setting: string): Promise<unknown> {
  const bytes = await readBody(req, cap, setting);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError(400, "the body is not valid UTF-8 text", "invalid_json");
  }
  if (text.trim() === "") throw new ApiError(400, "the body is empty: send a JSON object", "invalid_json");
  if (jsonDepth(text) > MAX_JSON_DEPTH)
    throw new ApiError(400, `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels`, "invalid_json");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, `the body is not valid JSON: ${(err as Error).message.slice(0, 200)}`, "invalid_json");
  }
}
