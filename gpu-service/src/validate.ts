/**
 * GenerateRequest → the engine's GenerateParams, with defaults; every bad
 * field is an INVALID_ARGUMENT whose message says what is wrong.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { type GenerateRequest, Mode as ProtoMode, ScoreSource } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { maxRetainBudget, minRetainBudget } from "./engine/decoding/budget.js";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits, inspectImage } from "./engine/image-format.js";
import type { ChatMessage, Engine, GenerateParams, Mode } from "./engine/types.js";

export interface ValidationLimits {
  /** Bytes, pixels, longest side and aspect ratio of images, read from the header before a request waits for a worker. */
  image: ImageLimits;
  defaultMaxTokens: number;
  maxStopSequences: number;
}

export const DEFAULT_LIMITS: ValidationLimits = {
  image: DEFAULT_IMAGE_LIMITS,
  defaultMaxTokens: 256,
  maxStopSequences: 8,
};

/** Engine mode of each wire mode (and back); an unspecified mode is the service default, twig. */
const PROTO_MODES: [ProtoMode, Mode][] = [
  [ProtoMode.TWIG, "twig"],
  [ProtoMode.BASE, "base"],
  [ProtoMode.FASTV, "fastv"],
  [ProtoMode.RANDOM, "random"],
  [ProtoMode.SSD_ONLY, "ssd-only"],
  [ProtoMode.TTP_ONLY, "ttp-only"],
  [ProtoMode.VISIONZIP, "visionzip"],
];
const MODES: Record<number, Mode> = { [ProtoMode.UNSPECIFIED]: "twig", ...Object.fromEntries(PROTO_MODES) };
export const PROTO_MODE_OF = Object.fromEntries(PROTO_MODES.map(([p, m]) => [m, p])) as Record<Mode, ProtoMode>;

// unspecified: the model's default (its twig's ttp_score_source, else the last token)
const SCORE_SOURCES: Record<number, GenerateParams["scoreSource"]> = {
  [ScoreSource.UNSPECIFIED]: undefined,
  [ScoreSource.LAST_TOKEN]: "last-token",
  [ScoreSource.ALL_TEXT]: "all-text",
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
  const image = req.image?.source;
  if (!image || image.case === undefined) throw invalid(`model ${info.name} needs an image: set image.data`);
  if (image.case === "uri")
    throw invalid("image.uri is not supported by the GPU service: send the image bytes in image.data");
  const bytes = image.value;

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
    if (!prompt.includes("<image>")) throw invalid("a raw prompt must contain the <image> placeholder");
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
    const shape = {
      visualTokens: info.visualTokens,
      numLayers: info.numLayers,
      k: info.twig.k,
      finalWipeLayer: info.twig.finalWipeLayer,
    };
    const lo = minRetainBudget(shape);
    const hi = maxRetainBudget(shape);
    if (a.retainBudget < lo || a.retainBudget > hi || a.retainBudget > info.visualTokens) {
      throw invalid(
        `retain_budget ${a.retainBudget} is outside [${Math.ceil(lo)}, ${Math.floor(Math.min(hi, info.visualTokens))}] for model ${info.name} (${info.visualTokens} visual tokens)`,
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
    image: bytes,
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
