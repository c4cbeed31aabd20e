/**
 * GenerateRequest → the engine's GenerateParams, with defaults; every bad
 * field is an INVALID_ARGUMENT whose message says what is wrong.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { type GenerateRequest, Mode as ProtoMode, ScoreSource } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { MODE_NAME, MODE_NUMBER, SCORE_SOURCE_NAME } from "@twigserve/proto/twigvlm/v1/names.js";
import { maxRetainBudget, minRetainBudget } from "../engine/decoding/budget.js";
import type { Engine } from "../engine/engine.js";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits, inspectImage } from "../engine/image-format.js";
import type { ChatMessage, GenerateParams, Mode, VideoInput } from "../engine/plan.js";
import { DEFAULT_VIDEO_LIMITS, inspectVideo, type VideoLimits } from "../engine/video/decode.js";

export interface ValidationLimits {
  /** Bytes, pixels, longest side and aspect ratio of images, read from the header before a request waits for a worker. */
  image: ImageLimits;
  /** Bytes, duration, frames and frame size of videos, probed before a request waits for a worker. */
  video: VideoLimits;
  defaultMaxTokens: number;
  maxStopSequences: number;
}

export const DEFAULT_LIMITS: ValidationLimits = {
  image: DEFAULT_IMAGE_LIMITS,
  video: DEFAULT_VIDEO_LIMITS,
  defaultMaxTokens: 256,
  maxStopSequences: 8,
};

/**
 * Largest request message accepted: the largest image or video (a video's list of frames together)
 * plus 1 MiB for the prompt and the other fields.
 */
export function requestMaxBytes(limits: Pick<ValidationLimits, "image" | "video">): number {
  return Math.max(limits.image.maxBytes, limits.video.maxBytes) + 1024 * 1024;
}

/** Engine mode of each wire mode (and back, PROTO_MODE_OF); an unspecified mode is the service default, twig. */
const MODES: Record<number, Mode> = { [ProtoMode.UNSPECIFIED]: "twig", ...MODE_NAME };
export const PROTO_MODE_OF: Record<Mode, ProtoMode> = MODE_NUMBER;

// unspecified: the model's default (its twig's ttp_score_source, else the last token)
const SCORE_SOURCES: Record<number, GenerateParams["scoreSource"]> = {
  [ScoreSource.UNSPECIFIED]: undefined,
  ...SCORE_SOURCE_NAME,
};

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

export function validateRequest(
  req: GenerateRequest,
  engine: Engine,
  limits: ValidationLimits = DEFAULT_LIMITS,
): GenerateParams {
  const info = engine.info;
  const { image, video } = mediaOf(req, engine);
  const placeholder = video ? "<video>" : "<image>";

  let messages: ChatMessage[] | undefined;
  let prompt: string | undefined;
  if (req.input.case === "conversation") {
    messages = req.input.value.messages.map((m, i) => {
      if (m.role !== "system" && m.role !== "user" && m.role !== "assistant") {
        throw invalid(`messages[${i}].role must be system, user or assistant, got "${m.role}"`);
      }
      return { role: m.role, content: m.content };
    });
    if (!messages.some((m) => m.role === "user")) throw invalid("the conversation has no user message");
    if (messages[messages.length - 1].role !== "user")
      throw invalid("the last message of the conversation must be the user's");
  } else if (req.input.case === "prompt") {
    prompt = req.input.value;
    if (!prompt.includes(placeholder)) throw invalid(`a raw prompt must contain the ${placeholder} placeholder`);
  } else {
    throw invalid("set either conversation or prompt");
  }

  const s = req.sampling;
  const maxTokens = s?.maxTokens || limits.defaultMaxTokens;
  if (maxTokens > info.contextLength)
    throw invalid(`max_tokens ${maxTokens} exceeds the context length ${info.contextLength}`);
  const temperature = s?.temperature ?? 0;
  if (!(temperature >= 0 && temperature <= 2)) throw invalid(`temperature must be in [0, 2], got ${temperature}`);
  const topP = s?.topP === undefined || s.topP === 0 ? 1 : s.topP; // 0 is proto3's "unset"; NaN is an error
  if (!(topP > 0 && topP <= 1)) throw invalid(`top_p must be in (0, 1], got ${topP}`);
  const stop = s?.stop ?? [];
  if (stop.length > limits.maxStopSequences)
    throw invalid(`at most ${limits.maxStopSequences} stop sequences, got ${stop.length}`);
  if (stop.some((x) => x.length === 0 || x.length > 64))
    throw invalid("stop sequences must be 1 to 64 characters long");

  const a = req.acceleration;
  const mode = MODES[a?.mode ?? 0];
  if (!mode) throw invalid(`unknown mode ${a?.mode}`);
  if (mode !== "base" && !info.twig) throw invalid(`mode ${mode} needs a twig and model ${info.name} has none`);
  let retainBudget: number | undefined;
  if (a?.retainBudget) {
    if (!info.twig) throw invalid(`model ${info.name} has no twig, so no retain budget applies`);
    // where N varies (LLaVA-NeXT, videos) the engine checks the budget against the request's own N
    const N = info.visualTokensVary
      ? Math.max(info.visualTokens, (info.video?.tokensPerFrame ?? 0) * (info.video?.maxFrames ?? 0))
      : info.visualTokens;
    const shape = {
      visualTokens: N,
      numLayers: info.numLayers,
      k: info.twig.k,
      finalWipeLayer: info.twig.finalWipeLayer,
    };
    const lo = info.visualTokensVary ? 0 : minRetainBudget(shape);
    const hi = maxRetainBudget(shape);
    if (a.retainBudget < lo || a.retainBudget > hi || a.retainBudget > N) {
      throw invalid(
        `retain_budget ${a.retainBudget} is outside [${Math.ceil(lo)}, ${Math.floor(Math.min(hi, N))}] for model ${info.name} (${info.visualTokensVary ? "at most " : ""}${N} visual tokens)`,
      );
    }
    retainBudget = a.retainBudget;
  }
  const draftLength = a?.draftLength || undefined;
  if (draftLength !== undefined && draftLength > 16)
    throw invalid(`draft_length must be at most 16, got ${draftLength}`);
  const draftThreshold = a?.draftThreshold || undefined;
  if (draftThreshold !== undefined && !(draftThreshold > 0 && draftThreshold <= 1))
    throw invalid(`draft_threshold must be in (0, 1], got ${draftThreshold}`);
  const sourceCode = a?.scoreSource ?? ScoreSource.UNSPECIFIED;
  if (!(sourceCode in SCORE_SOURCES)) throw invalid(`unknown score_source ${sourceCode}`);
  const scoreSource = SCORE_SOURCES[sourceCode];
  const seed = s?.seed === undefined ? undefined : Number(s.seed % 4294967296n);

  return {
    image,
    video,
    messages,
    prompt,
    maxTokens,
    temperature,
    topP,
    seed,
    stop,
    mode,
    retainBudget,
    draftLength,
    draftThreshold,
    scoreSource,
  };
}

/** The request's image or video (exactly one; a video only for a model that reads videos). */
function mediaOf(req: GenerateRequest, engine: Engine): { image?: Uint8Array; video?: VideoInput } {
  const info = engine.info;
  const image = req.image?.source;
  const v = req.video;
  const hasVideo = v !== undefined && (v.data.length > 0 || v.frames.length > 0);
  if (image?.case !== undefined && v !== undefined) throw invalid("send an image or a video, not both");
  if (v !== undefined) {
    if (!info.video) throw invalid(`model ${info.name} reads pictures only: send an image, not a video`);
    if (!hasVideo) throw invalid("the video has no frames: set video.data (MP4 or WebM) or video.frames");
    if (v.data.length > 0 && v.frames.length > 0) throw invalid("set video.data or video.frames, not both");
    return { video: v.data.length > 0 ? { data: v.data } : { frames: v.frames } };
  }
  if (!image || image.case === undefined)
    throw invalid(
      `model ${info.name} needs an image: set image.data${info.video ? " (or video.data or video.frames)" : ""}`,
    );
  if (image.case === "uri")
    throw invalid("image.uri is not supported by the GPU service: send the image bytes in image.data");
  return { image: image.value };
}

/**
 * Checks a request's video before it queues, as the engine would: its bytes, then what ffprobe says
 * of it (type, duration, frame count and size); a list of frames by each frame's header.
 */
export async function checkVideo(video: VideoInput, limits: ValidationLimits = DEFAULT_LIMITS): Promise<void> {
  try {
    if (video.data) {
      await inspectVideo(video.data, limits.video);
      return;
    }
    const frames = video.frames ?? [];
    for (const [i, f] of frames.entries()) {
      try {
        await inspectImage(f, limits.image);
      } catch (err) {
        throw new Error(`video frame ${i}: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    throw invalid((err as Error).message);
  }
}

/**
 * Reads the image's header (not its pixels) and refuses, before the request
 * queues, what the engine would refuse: an empty or oversized file, a format
 * other than PNG, JPEG, WebP or GIF, and a geometry beyond the pixel, side or
 * aspect ratio limits (the engine checks the same with the same code).
 */
export async function checkImageHeader(bytes: Uint8Array, limits: ValidationLimits = DEFAULT_LIMITS): Promise<void> {
  try {
    await inspectImage(bytes, limits.image);
  } catch (err) {
    throw invalid((err as Error).message);
  }
}
