/**
 * Chat completion objects in OpenAI's shape, and the TwigVLM statistics the
 * final chunk (or the whole response) carries under `twigvlm`.
 */
import { create, type JsonObject, toJson } from "@bufbuild/protobuf";
import {
  type Delta,
  type Finished,
  FinishReason,
  GridSource,
  Mode,
  type Started,
  StatsSchema,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { MODE_NAME as MODE_NAMES } from "@twigserve/proto/twigvlm/v1/names.js";

const MODE_NAME: Record<number, string> = MODE_NAMES;

export type OpenAIFinishReason = "stop" | "length";

export const finishReasonOf = (f: FinishReason): OpenAIFinishReason => (f === FinishReason.LENGTH ? "length" : "stop");

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export const usageOf = (f: Finished): Usage => ({
  prompt_tokens: f.usage?.promptTokens ?? 0,
  completion_tokens: f.usage?.completionTokens ?? 0,
  total_tokens: f.usage?.totalTokens ?? 0,
});

/**
 * The `twigvlm` object: how the request was accelerated (the mode) and what it cost: the proto's
 * `Stats` in its JSON form under the proto's own field names, every field present (0 or [] when
 * unset), so a field added to the proto appears here without being written out again.
 */
export function twigStats(started: Started | undefined, f: Finished): JsonObject {
  const stats = toJson(StatsSchema, f.stats ?? create(StatsSchema), {
    useProtoFieldName: true,
    alwaysEmitImplicit: true,
  });
  return { mode: MODE_NAME[started?.mode ?? Mode.TWIG] ?? "twig", ...(stats as JsonObject) };
}

/**
 * The `twigvlm` object of a stream's first chunk (and of the non-stream response): the visual tokens
 * the request kept and where they lie on the picture, one grid per tower pass.
 */
export function twigStarted(started: Started) {
  return {
    mode: MODE_NAME[started.mode] ?? "twig",
    visual_tokens: started.visualTokens,
    kept_visual_indices: started.keptVisualIndices,
    visual_grids: started.visualGrids.map((g) => ({
      first_index: g.firstIndex,
      rows: g.rows,
      cols: g.cols,
      left: g.left,
      top: g.top,
      width: g.width,
      height: g.height,
      // LLaVA-NeXT's base view and tiles, a video's frames (a LLaVA-1.5 grid has none of these)
      ...(g.rowStride ? { row_stride: g.rowStride } : {}),
      ...(SOURCE_NAME[g.source] ? { source: SOURCE_NAME[g.source], index: g.index } : {}),
    })),
    ...(started.videoFrames.length ? { video_frames: started.videoFrames } : {}),
  };
}

/** A grid's source by name: a LLaVA-NeXT base view or tile, or a video frame. */
const SOURCE_NAME: Record<number, string> = {
  [GridSource.BASE]: "base",
  [GridSource.TILE]: "tile",
  [GridSource.FRAME]: "frame",
};

/** The `twigvlm` object of a content chunk: its tokens, and how many of them were accepted drafts. */
export const twigDelta = (d: Delta) => ({ tokens: d.tokenIds.length, accepted_draft_tokens: d.acceptedDraftTokens });

export interface CompletionIds {
  id: string;
  created: number;
  model: string;
}

export function chunk(
  ids: CompletionIds,
  delta: { role?: "assistant"; content?: string },
  finishReason: OpenAIFinishReason | null,
  withUsageField: boolean,
  extra: Record<string, unknown> = {},
) {
  return {
    id: ids.id,
    object: "chat.completion.chunk",
    created: ids.created,
    model: ids.model,
    system_fingerprint: null,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    ...(withUsageField ? { usage: null } : {}),
    ...extra,
  };
}

export function usageChunk(ids: CompletionIds, usage: Usage) {
  return {
    id: ids.id,
    object: "chat.completion.chunk",
    created: ids.created,
    model: ids.model,
    system_fingerprint: null,
    choices: [],
    usage,
  };
}

export function completion(ids: CompletionIds, text: string, started: Started | undefined, f: Finished) {
  return {
    id: ids.id,
    object: "chat.completion",
    created: ids.created,
    model: ids.model,
    system_fingerprint: null,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: text, refusal: null },
        logprobs: null,
        finish_reason: finishReasonOf(f.finishReason),
      },
    ],
    usage: usageOf(f),
    twigvlm: { ...(started ? twigStarted(started) : {}), ...twigStats(started, f) },
  };
}
