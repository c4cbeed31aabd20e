/**
 * The edge has no tokenizer, so it reserves an upper estimate of the prompt's
 * tokens: one token per 3 UTF-8 bytes of text (plus 8 per message for the chat
 * format) and IMAGE_TOKENS for the image (LLaVA-1.5: 576). After the stream,
 * the reservation is replaced by the GPU service's exact usage.
 */
import type { ChatRequest } from "./request.js";

export const IMAGE_TOKENS = 576;

export function estimatePromptTokens(req: ChatRequest): number {
  const enc = new TextEncoder();
  const text = req.messages.reduce((n, m) => n + Math.ceil(enc.encode(m.content).length / 3) + 8, 0);
  return text + IMAGE_TOKENS;
}
