/**
 * Server-Sent Events framing for chat completion streams: each chunk is one
 * `data: <json>` event, the stream ends with `data: [DONE]`, and an error after
 * the first token is one `data: {"error": {...}}` event (what OpenAI's SDKs
 * raise as an APIError) followed by the end of the stream, never a silent cut.
 * After SSE_HEARTBEAT_MS without an event, a comment line (`: keep-alive`,
 * which SSE clients skip) keeps proxies from timing the stream out, and lets
 * the edge notice a client that has gone away while the GPU service is quiet.
 */
import type { ErrorBody } from "../http/errors.js";

const encoder = new TextEncoder();

export const sseEvent = (data: unknown): Uint8Array => encoder.encode(`data: ${JSON.stringify(data)}\n\n`);
export const SSE_DONE = encoder.encode("data: [DONE]\n\n");
export const SSE_HEARTBEAT = encoder.encode(": keep-alive\n\n");
export const SSE_HEARTBEAT_MS = 2000;
export const sseError = (body: ErrorBody): Uint8Array => sseEvent(body);

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
};
