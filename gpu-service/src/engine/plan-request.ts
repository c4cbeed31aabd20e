/**
 * A request resolved once: `planRequest` turns what a caller asks (`RequestInput`) into what the engine
 * runs (`GenerateParams`), for one model. It checks the prompt and sampling against the model, reads the
 * picture's or video's header (the limits, and N, the visual tokens it gives), and resolves the mode's
 * choices for that N: the retain budget R-bar (checked here, and only here) and R, the scorer, and
 * SSD's delta and theta. Everything it refuses is an InvalidRequestError whose message names the problem.
 *
 * The service plans each request before it queues (server/validate.ts reads the wire into a
 * `RequestInput` first); the command line, the evaluation and the tests plan theirs the same way. Below
 * this, the engine asserts what a plan guarantees (`invariant`) and checks nothing of it again.
 */
import {
  budgetForPrunedFraction,
  defaultRetainBudget,
  isPrunedFraction,
  keptTokensForBudget,
  maxRetainBudget,
  minRetainBudget,
} from "./decoding/budget.js";
import type { EngineInfo } from "./engine.js";
import { InvalidRequestError } from "./errors.js";
import { inspectImage } from "./image-format.js";
import type { AccelerationPlan, GenerateParams, RequestInput } from "./plan.js";
import { scoresByAttention } from "./pruning/registry.js";
import { MODE_PLANS } from "./twig/modes.js";
import { inspectVideo } from "./video/decode.js";
import { DEFAULT_MEDIA_LIMITS, type MediaLimits } from "./visual-input.js";
import { frameTokens, pictureTokens } from "./visual-tokens.js";

/** SSD's defaults, the released code's: delta = 5 drafts at most, stopping after one below theta = 0.6. */
export const DEFAULT_DRAFT = { length: 5, threshold: 0.6 } as const;
/** The longest draft a request may ask for. */
export const MAX_DRAFT_LENGTH = 16;

/** The acceleration choices of a request, as asked. */
export type AccelerationAsk = Pick<
  RequestInput,
  "mode" | "retainBudget" | "prunedFraction" | "draftLength" | "draftThreshold" | "scoreSource"
>;

const invalid = (message: string) => new InvalidRequestError(message);

/**
 * The plan of `input` for the model `info` describes: its media checked from their headers (within
 * `limits`), then every choice resolved for the N they give.
 *
 * @example
 * const params = await planRequest({ image, prompt: "USER: <image>\nwhat is it ? ASSISTANT:", mode: "twig",
 *   maxTokens: 32, temperature: 0, topP: 1, stop: [] }, engine.info);
 * await engine.generate(params, onEvent);
 */
export async function planRequest(
  input: RequestInput,
  info: EngineInfo,
  limits: MediaLimits = DEFAULT_MEDIA_LIMITS,
): Promise<GenerateParams> {
  checkRequest(input, info);
  const N = await inspectMedia(input, info, limits);
  const { mode, retainBudget, prunedFraction, draftLength, draftThreshold, scoreSource, ...body } = input;
  const ask = { mode, retainBudget, prunedFraction, draftLength, draftThreshold, scoreSource };
  return { ...body, plan: planAcceleration(ask, info, N) };
}

/**
 * Everything of a request that does not depend on its media: the media's kind, the prompt, sampling, the
 * mode and the acceleration settings (but the budget, which planAcceleration checks against the request's N).
 */
export function checkRequest(input: RequestInput, info: EngineInfo): void {
  if (input.image && input.video) throw invalid("send an image or a video, not both");
  if (!input.image && !input.video) throw invalid(`model ${info.name} needs an image`);
  if (input.video && !info.video) throw invalid(`model ${info.name} reads pictures only: send an image, not a video`);
  checkAcceleration(input, info);
  const placeholder = input.video ? "<video>" : "<image>";
  const plan = MODE_PLANS[input.mode];

  // the prompt: one placeholder, and (when the mode prunes) text after it, for the scores to come from
  const exactlyOne = `the prompt must contain exactly one ${placeholder} placeholder`;
  if (input.messages !== undefined) {
    const messages = input.messages;
    if (!messages.some((m) => m.role === "user")) throw invalid("the conversation has no user message");
    if (messages[messages.length - 1].role !== "user")
      throw invalid("the last message of the conversation must be the user's");
    // the chat format puts the placeholder into the first user message, before its text and the answer's cue
    if (messages.some((m) => m.content.includes(placeholder))) throw invalid(exactlyOne);
  } else if (input.prompt !== undefined) {
    const at = input.prompt.indexOf(placeholder);
    if (at < 0) throw invalid(`a raw prompt must contain the ${placeholder} placeholder`);
    if (input.prompt.indexOf(placeholder, at + 1) >= 0) throw invalid(exactlyOne);
    if (plan.pruning !== "none" && input.prompt.slice(at + placeholder.length).trim() === "")
      throw invalid(
        `mode ${input.mode} prunes visual tokens, so the prompt must go on after the ${placeholder.slice(1, -1)}`,
      );
  } else {
    throw invalid("set either conversation or prompt");
  }

  if (input.maxTokens > info.contextLength)
    throw invalid(`max_tokens ${input.maxTokens} exceeds the context length ${info.contextLength}`);
  if (!(input.temperature >= 0 && input.temperature <= 2))
    throw invalid(`temperature must be in [0, 2], got ${input.temperature}`);
  if (!(input.topP > 0 && input.topP <= 1)) throw invalid(`top_p must be in (0, 1], got ${input.topP}`);
}

/** The acceleration a request asks for, as far as it does not depend on the request's N. */
export function checkAcceleration(ask: AccelerationAsk, info: EngineInfo): void {
  if (!MODE_PLANS[ask.mode]) throw invalid(`unknown mode ${ask.mode}`);
  if (ask.mode !== "base" && !info.twig) throw invalid(`mode ${ask.mode} needs a twig and model ${info.name} has none`);
  if (ask.retainBudget !== undefined && !info.twig)
    throw invalid(`model ${info.name} has no twig, so no retain budget applies`);
  const f = ask.prunedFraction;
  if (f !== undefined) {
    if (ask.retainBudget !== undefined) throw invalid("give retain_budget or pruned_fraction, not both");
    if (!info.twig) throw invalid(`model ${info.name} has no twig, so no pruned fraction applies`);
    if (!isPrunedFraction(f)) throw invalid(`pruned_fraction must be between 0 and 1 (both excluded), got ${f}`);
  }
  const { draftLength, draftThreshold } = ask;
  if (draftLength !== undefined && draftLength > MAX_DRAFT_LENGTH)
    throw invalid(`draft_length must be at most ${MAX_DRAFT_LENGTH}, got ${draftLength}`);
  if (draftLength !== undefined && !(Number.isInteger(draftLength) && draftLength >= 1))
    throw invalid(`draft_length must be a whole number from 1 to ${MAX_DRAFT_LENGTH}, got ${draftLength}`);
  // (0 reaches here only from in-process callers, where it drafts delta tokens every round: the wire reads 0 as unset)
  if (draftThreshold !== undefined && !(draftThreshold >= 0 && draftThreshold <= 1))
    throw invalid(`draft_threshold must be in (0, 1], got ${draftThreshold}`);
}

/**
 * N of the request's picture or video, from its header (a picture's size, ffprobe's frame count, each listed
 * frame's header) checked against the limits; nothing is decoded. LLaVA-NeXT's N varies with the picture's
 * shape, a video's with its frames; LLaVA-1.5's is the model's.
 */
export async function inspectMedia(
  media: Pick<RequestInput, "image" | "video">,
  info: EngineInfo,
  limits: MediaLimits = DEFAULT_MEDIA_LIMITS,
): Promise<number> {
  if (media.video) {
    const perFrame = info.visual ? frameTokens(info.visual) : undefined;
    if (perFrame === undefined) throw invalid(`model ${info.name} reads pictures only: send an image, not a video`);
    let frames: number;
    if (media.video.data) frames = (await inspectVideo(media.video.data, limits.video)).frames;
    else {
      const list = media.video.frames ?? [];
      for (const [i, f] of list.entries()) {
        try {
          await inspectImage(f, limits.image);
        } catch (err) {
          throw invalid(`video frame ${i}: ${(err as Error).message}`);
        }
      }
      frames = list.length;
    }
    return Math.min(frames, limits.video.maxFrames) * perFrame;
  }
  if (!media.image) throw invalid(`model ${info.name} needs an image`);
  const g = await inspectImage(media.image, limits.image);
  return info.visualTokensVary && info.visual ? pictureTokens(info.visual, g.height, g.width) : info.visualTokens;
}

/** The acceleration plan of a request `checkAcceleration` passed, whose media give N visual tokens. */
export function planAcceleration(ask: AccelerationAsk, info: EngineInfo, visualTokens: number): AccelerationPlan {
  const { mode, prunedFraction, draftLength, draftThreshold, scoreSource } = ask;
  const N = visualTokens;
  const modePlan = MODE_PLANS[mode];
  const prunes = modePlan.pruning !== "none";
  const twig = info.twig;
  const shape = twig && { visualTokens: N, numLayers: info.numLayers, k: twig.k, finalWipeLayer: twig.finalWipeLayer };
  // a pruned fraction is this request's R-bar, for its own N (and nothing in the modes that keep every token)
  const fromFraction = prunedFraction !== undefined && prunes ? budgetForPrunedFraction(prunedFraction, N) : undefined;
  const asked = ask.retainBudget ?? fromFraction;
  if (asked !== undefined && shape) {
    const origin =
      fromFraction === undefined ? "" : `pruned_fraction ${prunedFraction} gives R-bar ${asked} for this request: `;
    checkRetainBudget(asked, info, shape, prunes, origin);
  }
  const retainBudget = prunes && shape ? (asked ?? defaultRetainBudget(shape, twig.defaultPrunedFraction)) : null;
  return {
    mode,
    visualTokens: N,
    retainBudget,
    keptVisualTokens: retainBudget !== null && shape ? keptTokensForBudget(retainBudget, shape) : N,
    scoreSource: scoresByAttention(modePlan.pruning) ? (scoreSource ?? twig?.defaultScoreSource ?? "last-token") : null,
    draft: modePlan.speculative
      ? { length: draftLength ?? DEFAULT_DRAFT.length, threshold: draftThreshold ?? DEFAULT_DRAFT.threshold }
      : null,
  };
}

/**
 * The one range check of a retain budget: R-bar must lie in [N*K/L, N*K_f/L] (R from 0 to N, see
 * decoding/budget.ts), for the N it applies to. That is the request's own N when the mode prunes. When it
 * does not, the budget applies to nothing and is held to what any request to the model could take: N itself
 * for LLaVA-1.5, and up to the most visual tokens a request can give where N varies. `origin` opens the
 * refusal when the budget was derived (from a pruned fraction).
 */
function checkRetainBudget(
  budget: number,
  info: EngineInfo,
  shape: { visualTokens: number; numLayers: number; k: number; finalWipeLayer: number },
  prunes: boolean,
  origin = "",
): void {
  const vary = info.visualTokensVary === true;
  const N = prunes || !vary ? shape.visualTokens : mostVisualTokens(info);
  const against = { ...shape, visualTokens: N };
  const lo = prunes || !vary ? minRetainBudget(against) : 0;
  const hi = maxRetainBudget(against);
  if (budget >= lo && budget <= hi) return;
  const { k, finalWipeLayer, numLayers } = against;
  throw invalid(
    origin +
      (vary && prunes
        ? `retain budget ${budget} is outside [${lo}, ${hi}] for N=${N}, K=${k}, K_f=${finalWipeLayer}, L=${numLayers}`
        : `retain_budget ${budget} is outside [${Math.ceil(lo)}, ${Math.floor(Math.min(hi, N))}] for model ${info.name} (${vary ? "at most " : ""}${N} visual tokens)`),
  );
}

/** The most visual tokens one request to the model can give (a picture's, or a video's at its most frames). */
function mostVisualTokens(info: EngineInfo): number {
  return Math.max(info.visualTokens, (info.video?.tokensPerFrame ?? 0) * (info.video?.maxFrames ?? 0));
}
