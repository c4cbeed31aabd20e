/**
 * A GenerateRequest off the wire → the engine's plan of it. This file reads the wire (proto3's zeros as
 * "unset", the enums by number, the media fields, the roles and the stop sequences the service allows);
 * everything else is planning, the engine's `planRequest` (engine/plan-request.ts), the one place that
 * checks a request against its model and resolves it. Every refusal is an INVALID_ARGUMENT whose message
 * says what is wrong.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { type GenerateRequest, Mode as ProtoMode, ScoreSource } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { MODE_NAME, MODE_NUMBER, SCORE_SOURCE_NAME } from "@twigserve/proto/twigvlm/v1/names.js";
import type { Engine } from "../engine/engine.js";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits } from "../engine/image-format.js";
import type { ChatMessage, GenerateParams, Mode, RequestInput, VideoInput } from "../engine/plan.js";
import { planRequest } from "../engine/plan-request.js";
import { DEFAULT_VIDEO_LIMITS, type VideoLimits } from "../engine/video/decode.js";

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
const SCORE_SOURCES: Record<number, RequestInput["scoreSource"]> = {
  [ScoreSource.UNSPECIFIED]: undefined,
  ...SCORE_SOURCE_NAME,
};

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** The request's plan for `engine`'s model, its media checked from their headers: what the scheduler runs. */
export async function validateRequest(
  req: GenerateRequest,
  engine: Engine,
  limits: ValidationLimits = DEFAULT_LIMITS,
): Promise<GenerateParams> {
  const input = readRequest(req, engine, limits);
  try {
    return await planRequest(input, engine.info, limits);
  } catch (err) {
    if ((err as Error).name === "InvalidRequestError") throw invalid((err as Error).message);
    throw err;
  }
}

/** The request as the engine's planning reads it: the wire's fields decoded, its zeros read as "unset". */
export function readRequest(
  req: GenerateRequest,
  engine: Engine,
  limits: Pick<ValidationLimits, "defaultMaxTokens" | "maxStopSequences"> = DEFAULT_LIMITS,
): RequestInput {
  const { image, video } = mediaOf(req, engine);

  let messages: ChatMessage[] | undefined;
  let prompt: string | undefined;
  if (req.input.case === "conversation") {
    messages = req.input.value.messages.map((m, i) => {
      if (m.role !== "system" && m.role !== "user" && m.role !== "assistant") {
        throw invalid(`messages[${i}].role must be system, user or assistant, got "${m.role}"`);
      }
      return { role: m.role, content: m.content };
    });
  } else if (req.input.case === "prompt") {
    prompt = req.input.value;
  } else {
    throw invalid("set either conversation or prompt");
  }

  const s = req.sampling;
  const stop = s?.stop ?? [];
  if (stop.length > limits.maxStopSequences)
    throw invalid(`at most ${limits.maxStopSequences} stop sequences, got ${stop.length}`);
  if (stop.some((x) => x.length === 0 || x.length > 64))
    throw invalid("stop sequences must be 1 to 64 characters long");

  const a = req.acceleration;
  const mode = MODES[a?.mode ?? 0];
  if (!mode) throw invalid(`unknown mode ${a?.mode}`);
  const sourceCode = a?.scoreSource ?? ScoreSource.UNSPECIFIED;
  if (!(sourceCode in SCORE_SOURCES)) throw invalid(`unknown score_source ${sourceCode}`);

  return {
    image,
    video,
    messages,
    prompt,
    maxTokens: s?.maxTokens || limits.defaultMaxTokens,
    temperature: s?.temperature ?? 0,
    topP: s?.topP === undefined || s.topP === 0 ? 1 : s.topP, // 0 is proto3's "unset"; NaN is an error
    seed: s?.seed === undefined ? undefined : Number(s.seed % 4294967296n),
    stop,
    mode,
    retainBudget: a?.retainBudget || undefined,
    prunedFraction: a?.prunedFraction || undefined,
    draftLength: a?.draftLength || undefined,
    draftThreshold: a?.draftThreshold || undefined,
    scoreSource: SCORE_SOURCES[sourceCode],
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
