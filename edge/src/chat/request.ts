/**
 * The OpenAI chat completions request, checked field by field (a 400 names the
 * field), plus the TwigVLM extension:
 *
 *   "twigvlm": {"mode": "twig" | "base" | "fastv" | "random" | "ssd-only" | "ttp-only" | "visionzip",
 *               "retain_budget": 64 | "pruned_fraction": 0.778, "draft_length": 5, "draft_threshold": 0.6,
 *               "score_source": "last-token" | "all-text"}
 *
 * Messages are text with exactly one picture or video overall, in a user message:
 *   {"type": "image_url", "image_url": {"url": ...}}   a picture: a `data:image/...;base64,` URL or the id
 *                                                     of an uploaded file (`file-<sha256>`, POST /v1/files)
 *   {"type": "video_url", "video_url": {"url": ...}}   a short video: a `data:video/mp4;base64,` (or webm) URL
 *   {"type": "video", "video": [url, ...]}             a video as its frames, in order, each as image_url's url
 */
import { type Mode, ScoreSource } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { MODE_NUMBER, SCORE_SOURCE_NUMBER } from "@twigserve/proto/twigvlm/v1/names.js";
import { invalidParam } from "../http/errors.js";

export const DEFAULT_MAX_TOKENS = 256;
export const MAX_STOP_SEQUENCES = 4;

/** The modes by their API names (generated from the proto's enum: proto/enum-names.ts). */
export const MODES: Record<string, Mode> = MODE_NUMBER;

/** How TTP (and `fastv`) score the visual tokens; absent: the model's default (its twig's `ttp_score_source`). */
export const SCORE_SOURCES: Record<string, ScoreSource> = SCORE_SOURCE_NUMBER;

/** `table[name]` when `name` is one of the table's own keys; otherwise a 400 naming `field` and the keys. */
function oneOf<T>(table: Record<string, T>, name: unknown, field: string, note = ""): T {
  if (typeof name === "string" && Object.hasOwn(table, name)) return table[name];
  throw invalidParam(field, `${field} must be one of ${Object.keys(table).join(", ")}${note}`);
}

/** The conversation's one picture or video, by the URLs the client gave. */
export type ChatMedia =
  | { kind: "image"; url: string }
  | { kind: "video"; url: string }
  | { kind: "frames"; urls: string[] };

export interface ChatRequest {
  model: string;
  messages: { role: "system" | "user" | "assistant"; content: string }[];
  /** The one picture (a data: URL or a file id) or video (a data: URL, or its frames). */
  media: ChatMedia;
  stream: boolean;
  includeUsage: boolean;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: bigint;
  stop: string[];
  acceleration: {
    mode: Mode;
    retainBudget: number;
    prunedFraction: number;
    draftLength: number;
    draftThreshold: number;
    scoreSource: ScoreSource;
  };
}

type Json = Record<string, unknown>;

/** A value as a message may quote it: strings cut to 40 characters, anything else by its type. */
export const shown = (v: unknown): string =>
  typeof v === "string"
    ? JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)
    : `(a ${v === null ? "null" : typeof v})`;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function num(body: Json, name: string, lo: number, hi: number, integer = false): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v)))
    throw invalidParam(name, `${name} must be ${integer ? "an integer" : "a number"} in [${lo}, ${hi}]`);
  return v;
}

/** A part's url: `part[field].url`, or `part[field]` itself when it is a string. */
function urlOf(part: Json, field: string, where: string, what: string): string {
  const v = part[field];
  const url = isObject(v) ? v.url : v;
  if (typeof url !== "string" || url === "")
    throw invalidParam(`${where}.${field}.url`, `a ${field} part needs ${field}.url (${what})`);
  return url;
}

function contentOf(msg: Json, i: number, media: ChatMedia[]): string {
  const c = msg.content;
  if (typeof c === "string") return c;
  if (!Array.isArray(c)) throw invalidParam(`messages[${i}].content`, "content must be a string or an array of parts");
  const texts: string[] = [];
  c.forEach((part: unknown, j) => {
    const where = `messages[${i}].content[${j}]`;
    if (!isObject(part)) throw invalidParam(where, "each content part must be an object");
    if (part.type === "text") {
      if (typeof part.text !== "string") throw invalidParam(`${where}.text`, "a text part needs a string 'text'");
      texts.push(part.text);
    } else if (part.type === "image_url" || part.type === "video_url" || part.type === "video") {
      if (msg.role !== "user") throw invalidParam(where, "pictures and videos are accepted in user messages only");
      if (part.type === "image_url")
        media.push({ kind: "image", url: urlOf(part, "image_url", where, "a data: URL or a file id") });
      else if (part.type === "video_url")
        media.push({
          kind: "video",
          url: urlOf(part, "video_url", where, "a data:video/mp4 or video/webm base64 URL"),
        });
      else {
        const frames = part.video;
        if (!Array.isArray(frames))
          throw invalidParam(`${where}.video`, "a video part's video is a list of its frames: image URLs or file ids");
        media.push({
          kind: "frames",
          urls: frames.map((f: unknown, k) => {
            const url = isObject(f) ? f.url : f;
            if (typeof url !== "string" || url === "")
              throw invalidParam(`${where}.video[${k}]`, "each frame is a data:image URL or a file id");
            return url;
          }),
        });
      }
    } else {
      throw invalidParam(
        `${where}.type`,
        `unsupported content part type ${shown(part.type)}; use text, image_url, video_url or video`,
      );
    }
  });
  return texts.join("\n");
}

export function parseChatRequest(body: unknown, defaultModel: string | undefined): ChatRequest {
  if (!isObject(body)) throw invalidParam("body", "the body must be a JSON object");
  const model = body.model ?? defaultModel;
  if (typeof model !== "string" || model === "" || model.length > 256)
    throw invalidParam("model", "model is required: the name of a model (at most 256 characters)");
  if (!Array.isArray(body.messages) || body.messages.length === 0)
    throw invalidParam("messages", "messages must be a non-empty array");
  const media: ChatMedia[] = [];
  const messages = body.messages.map((m: unknown, i) => {
    if (!isObject(m)) throw invalidParam(`messages[${i}]`, "each message must be an object");
    const role = m.role === "developer" ? "system" : m.role;
    if (role !== "system" && role !== "user" && role !== "assistant")
      throw invalidParam(`messages[${i}].role`, "role must be system, developer, user or assistant");
    return { role, content: contentOf(m, i, media) } as ChatRequest["messages"][number];
  });
  if (messages[messages.length - 1].role !== "user")
    throw invalidParam("messages", "the last message must be the user's");
  if (media.length !== 1)
    throw invalidParam(
      "messages",
      `the models served here need exactly one picture or video per conversation (an image_url, video_url or video part); got ${media.length}`,
    );

  const n = num(body, "n", 1, 128, true);
  if (n !== undefined && n !== 1) throw invalidParam("n", "only n = 1 is supported");
  if (body.stream !== undefined && typeof body.stream !== "boolean")
    throw invalidParam("stream", "stream must be a boolean");
  const so = body.stream_options;
  if (so !== undefined && so !== null && !isObject(so))
    throw invalidParam("stream_options", "stream_options must be an object");
  const maxTokens =
    num(body, "max_completion_tokens", 1, 1_000_000, true) ??
    num(body, "max_tokens", 1, 1_000_000, true) ??
    DEFAULT_MAX_TOKENS;
  let stop: string[] = [];
  if (typeof body.stop === "string") stop = [body.stop];
  else if (Array.isArray(body.stop)) stop = body.stop;
  else if (body.stop !== undefined && body.stop !== null)
    throw invalidParam("stop", "stop must be a string or an array of strings");
  if (stop.length > MAX_STOP_SEQUENCES || stop.some((s) => typeof s !== "string" || s.length === 0 || s.length > 64))
    throw invalidParam("stop", `stop takes at most ${MAX_STOP_SEQUENCES} strings of 1 to 64 characters`);
  const seed = num(body, "seed", -(2 ** 53), 2 ** 53, true);

  const tv = body.twigvlm ?? {};
  if (!isObject(tv)) throw invalidParam("twigvlm", "twigvlm must be an object");
  const mode = oneOf(MODES, tv.mode ?? "twig", "twigvlm.mode");
  const scoreSource =
    tv.score_source === undefined || tv.score_source === null
      ? ScoreSource.UNSPECIFIED
      : oneOf(SCORE_SOURCES, tv.score_source, "twigvlm.score_source", " (absent: the model's default)");
  const ext = (name: string, lo: number, hi: number, integer: boolean) => {
    try {
      return num(tv, name, lo, hi, integer) ?? 0;
    } catch {
      throw invalidParam(
        `twigvlm.${name}`,
        `twigvlm.${name} must be ${integer ? "an integer" : "a number"} in [${lo}, ${hi}]`,
      );
    }
  };

  const retainBudget = ext("retain_budget", 1, 100_000, true);
  // a share strictly between 0 and 1 (ext's ranges are closed); absent is 0, proto3's "unset"
  const f = tv.pruned_fraction;
  const given = f !== undefined && f !== null;
  if (given && !(typeof f === "number" && f > 0 && f < 1))
    throw invalidParam(
      "twigvlm.pruned_fraction",
      "twigvlm.pruned_fraction must be a number between 0 and 1 (both excluded)",
    );
  const prunedFraction = typeof f === "number" ? f : 0;
  if (retainBudget && prunedFraction)
    throw invalidParam("twigvlm.pruned_fraction", "give twigvlm.retain_budget or twigvlm.pruned_fraction, not both");

  return {
    model,
    messages,
    media: media[0],
    stream: body.stream === true,
    includeUsage: isObject(so) && so.include_usage === true,
    maxTokens,
    temperature: num(body, "temperature", 0, 2) ?? 1,
    topP: num(body, "top_p", 0, 1) ?? 1,
    seed: seed === undefined ? undefined : BigInt.asUintN(64, BigInt(seed)),
    stop,
    acceleration: {
      mode,
      retainBudget,
      prunedFraction,
      draftLength: ext("draft_length", 1, 16, true),
      draftThreshold: ext("draft_threshold", 0, 1, false),
      scoreSource,
    },
  };
}
