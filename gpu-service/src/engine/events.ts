/**
 * What an engine tells of one request as it runs, in order: "started" (the prompt's size and the
 * visual tokens kept), a "delta" per piece of verified text, and one "finished" with the statistics.
 */

export type FinishReason = "stop" | "length" | "stop_sequence";

export interface GenerateStats {
  visualTokens: number;
  visualTokensKept: number;
  prefillMs: number;
  timeToFirstTokenMs: number;
  decodeMs: number;
  tokensPerSecond: number;
  draftedTokens: number;
  acceptedTokens: number;
  acceptanceRate: number;
  verifications: number;
  meanAcceptedLength: number;
  /** histogram[i] = verifications that accepted exactly i drafted tokens. */
  acceptedLengthHistogram: number[];
}

/**
 * A grid of visual tokens over a rectangle of the picture (fractions of its width and height from its
 * top-left corner; it can reach past the picture); the token at row r, column c is firstIndex + r * cols + c.
 */
export interface VisualGrid {
  firstIndex: number;
  rows: number;
  cols: number;
  left: number;
  top: number;
  width: number;
  height: number;
  /** Tokens from one row to the next when not `cols` (a LLaVA-NeXT tile: its row of tiles and an image_newline). */
  rowStride?: number;
  /** What the grid covers, when not the whole (padded) picture: LLaVA-NeXT's base view or a tile, or a video frame. */
  source?: "base" | "tile" | "frame";
  /** The tile's number (row by row from 0) or the frame's (in the sampled frames, from 0). */
  index?: number;
}

export type EngineEvent =
  | {
      type: "started";
      promptTokens: number;
      visualTokens: number;
      keptVisualIndices: number[];
      /** Where the visual tokens lie on the picture (one grid per tower pass: view, tile or frame). */
      visualGrids: VisualGrid[];
      /** A video's sampled frames: their indices in the clip (or the list of frames). */
      videoFrames?: number[];
    }
  /**
   * Text never splits a multi-byte character and never contains (part of) a stop sequence. A
   * verification's accepted drafts and the full model's own token are separate deltas, so
   * acceptedDraftTokens is 0 or tokenIds.length.
   */
  | { type: "delta"; text: string; tokenIds: number[]; acceptedDraftTokens: number }
  | {
      type: "finished";
      finishReason: FinishReason;
      usage: { promptTokens: number; completionTokens: number };
      stats: GenerateStats;
    };
