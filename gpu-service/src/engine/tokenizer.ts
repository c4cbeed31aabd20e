/**
 * Text ↔ token ids through tokenizer.json (@huggingface/tokenizers), and the
 * prompt format: the model's own chat_template when tokenizer_config.json ships
 * one (rendered with @huggingface/jinja), else the LLaVA-1.5 "v1" conversation.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { invariant } from "./errors.js";
import type { ChatMessage } from "./plan.js";

export const LLAVA_V1_SYSTEM =
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

export class TextCodec {
  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly chatTemplate: Template | undefined,
    private readonly bosToken: string,
    private readonly eosToken: string,
  ) {}

  static load(dir: string): TextCodec {
    const path = join(dir, "tokenizer.json");
    if (!existsSync(path)) throw new Error(`${dir}: no tokenizer.json`);
    const json = JSON.parse(readFileSync(path, "utf8"));
    const cfgPath = join(dir, "tokenizer_config.json");
    const config = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, "utf8")) : {};
    const tokenText = (t: unknown, fallback: string) =>
      typeof t === "string" ? t : ((t as { content?: string })?.content ?? fallback);
    const template = typeof config.chat_template === "string" ? new Template(config.chat_template) : undefined;
    return new TextCodec(
      new Tokenizer(json, config),
      template,
      tokenText(config.bos_token, "<s>"),
      tokenText(config.eos_token, "</s>"),
    );
  }

  /** Token ids of text that already holds any special tokens it needs (no BOS is added). */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[]): string {
    // the tokenizer throws on an empty list (an answer that is EOS at once)
    return ids.length ? this.tokenizer.decode([...ids], { skip_special_tokens: true }) : "";
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** The prompt text for a conversation; the image placeholder (or `<video>`) goes into the first user message. */
  formatChat(messages: readonly ChatMessage[], placeholder = "<image>"): string {
    const firstUser = messages.findIndex((m) => m.role === "user");
    // planning refused any other conversation (plan-request.ts)
    invariant(firstUser >= 0, "the conversation has no user message");
    invariant(messages[messages.length - 1].role === "user", "the last message must be the user's");
    const withImage = messages.map((m, i) => (i === firstUser ? { ...m, content: `${placeholder}\n${m.content}` } : m));
    if (this.chatTemplate) {
      return this.chatTemplate.render({
        messages: withImage,
        add_generation_prompt: true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    }
    const system = messages.find((m) => m.role === "system")?.content ?? LLAVA_V1_SYSTEM;
    let text = `${this.bosToken}${system} `;
    for (const m of withImage) {
      if (m.role === "user") text += `USER: ${m.content} `;
      else if (m.role === "assistant") text += `ASSISTANT: ${m.content}${this.eosToken}`;
    }
    return `${text}ASSISTANT:`;
  }
}
