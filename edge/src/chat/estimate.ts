/**
 * The edge has no tokenizer, so it reserves an upper estimate of the prompt's
 * tokens: one token per 3 UTF-8 bytes of text (plus 8 per message for the chat
 * format) and IMAGE_TOKENS for the image (LLaVA-1.5: 576), or IMAGE_TOKENS per
 * frame for a video (VIDEO_FRAMES frames for a clip, whose frames it cannot
 * count). After the stream, the reservation is replaced by the GPU service's
 * exact usage.
 */
import type { ChatRequest } from "./request.js";

export const IMAGE_TOKENS = 576;
/** Frames a clip is taken to have (the GPU service samples 8 by default). */
export const VIDEO_FRAMES = 8;

export function estimatePromptTokens(req: ChatRequest): number {
  const enc = new TextEncoder();
  const text = req.messages.reduce((n, m) => n + Math.ceil(enc.encode(m.content).length / 3) + 8, 0);
  const m = req.media;
  const frames = m.kind === "image" ? 1 : m.kind === "video" ? VIDEO_FRAMES : Math.min(m.urls.length, VIDEO_FRAMES);
  return text + IMAGE_TOKENS * frames;
}
