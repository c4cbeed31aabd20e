/**
 * One request, as the engine takes it: the media and the prompt, sampling, and how TwigVLM
 * accelerates it (mode, retain budget, drafting, scorer).
 */
import type { ModeName } from "@twigserve/proto/twigvlm/v1/names.js";
import type { ScoreSource } from "./decoding/ttp.js";

/** The decoding modes, by the API's names (generated from the proto's enum; twig/modes.ts says what each does). */
export type Mode = ModeName;

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** A short video: encoded MP4 or WebM bytes (decoded with ffmpeg), or its frames as encoded images, in order. */
export interface VideoInput {
  data?: Uint8Array;
  frames?: Uint8Array[];
}

/** One request, as the engine sees it. Defaults are applied by the caller (validated already). */
export interface GenerateParams {
  /** Encoded image bytes (PNG, JPEG, WebP or GIF); exactly one of image and video. */
  image?: Uint8Array;
  /** A video, for a LLaVA-NeXT-Video model. */
  video?: VideoInput;
  /** Either a conversation (formatted with the model's chat format) or a raw prompt containing `<image>` (or `<video>`). */
  messages?: ChatMessage[];
  prompt?: string;
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** (0, 1]; 1 = no nucleus truncation. */
  topP: number;
  seed?: number;
  stop: string[];
  mode: Mode;
  /** R-bar: average visual tokens per layer; undefined = model default. */
  retainBudget?: number;
  /** delta, default 5. */
  draftLength?: number;
  /** theta, default 0.6. */
  draftThreshold?: number;
  scoreSource?: ScoreSource;
}
