/**
 * One request, twice over: as a caller asks for it (`RequestInput`: the media, the prompt, sampling and
 * how TwigVLM should accelerate it, each choice optional), and as the engine runs it (`GenerateParams`:
 * the same with every choice resolved into an `AccelerationPlan`). `planRequest` (plan-request.ts) is the
 * one place that turns the first into the second and refuses what cannot run; the engine takes a plan as
 * it is and only asserts what the plan promised.
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

/** The media, the prompt and sampling: what a request asks and the engine takes alike. */
interface RequestBody {
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
}

/** One request as a caller asks for it: every acceleration choice it leaves out is the model's default. */
export interface RequestInput extends RequestBody {
  mode: Mode;
  /** R-bar: average visual tokens per layer; absent = prunedFraction's, else the model's default for the request's N. */
  retainBudget?: number;
  /** The share of the request's visual tokens to prune, 0 < f < 1, in place of retainBudget: R-bar = round(N (1 - f)). */
  prunedFraction?: number;
  /** delta; absent = 5. */
  draftLength?: number;
  /** theta; absent = 0.6. */
  draftThreshold?: number;
  /** Absent = the twig's own (its config's ttp_score_source), else the released code's, last-token. */
  scoreSource?: ScoreSource;
}

/** SSD's drafting as applied: the twig drafts up to `length` tokens, stopping after one below `threshold`. */
export interface DraftPlan {
  /** delta. */
  length: number;
  /** theta. */
  threshold: number;
}

/** How TwigVLM accelerates one request, every choice resolved for the request's own N. */
export interface AccelerationPlan {
  mode: Mode;
  /** N: the visual tokens of the request's picture or video (counted from its header before it queued). */
  visualTokens: number;
  /** R-bar as applied; null in the modes that keep every visual token. */
  retainBudget: number | null;
  /** R: the visual tokens layers K+1..K_f keep (N in the modes that keep every one). */
  keptVisualTokens: number;
  /** The scorer applied to attention (TTP's, FastV's); null in the modes that score no visual token by attention. */
  scoreSource: ScoreSource | null;
  /** delta and theta as applied; null in the modes that do not draft. */
  draft: DraftPlan | null;
}

/** One request as the engine takes it: made by `planRequest` only, and run as it is. */
export interface GenerateParams extends RequestBody {
  plan: AccelerationPlan;
}
