/**
 * Server-Sent Events framing for chat completion streams: each chunk is one
 * `data: <json>` event, the stream ends with `data: [DONE]`, and an error after
 * the first token is one `data: {"error": {...}}` event (what OpenAI's SDKs
 * raise as an APIError) followed by the end of the stream, never a silent cut.
 */
import type { ErrorBody } from "../http/errors.js";

const encoder = new TextEncoder();

export const sseEvent = (data: unknown): Uint8Array => encoder.encode(`data: ${JSON.stringify(data)}\n\n`);
export const SSE_DONE = encoder.encode("data: [DONE]\n\n");
export const sseError = (body: ErrorBody): Uint8Array => sseEvent(body);

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
};
