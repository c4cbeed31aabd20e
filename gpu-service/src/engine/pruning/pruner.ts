/**
 * What every pruner is: a function from what a prompt's prefill produced to one score per
 * visual token. Layers K+1..K_f keep the R visual tokens with the highest scores (R from the
 * budget R-bar: decoding/budget.ts), in their original order and at their original positions;
 * layers after K_f keep none (FinalWipe). The pruners, one file each, and the registry that
 * picks one by a mode's pruning name are beside this file (registry.ts).
 */
import { type ScoreSource, visualScores } from "../decoding/ttp.js";
import { invariant } from "../errors.js";

/** What a prefill gives a pruner: the prompt of S rows with N visual tokens, and what was computed over it. */
export interface PruneInput {
  /** Each prompt row's position; the visual tokens are rows (and positions) visualStart..visualStart+N-1. */
  prompt: { positions: readonly number[]; visualStart: number; numVisual: number };
  /**
   * What base layers 1..K (the lower segment) and the twig gave: the attention probabilities of their last
   * layer, [heads, S, S], where a pruner reads them (`Pruner.reads`: the prefill copies out no others).
   */
  lower: { attentionProbs?: Float32Array };
  twig?: { attentionProbs?: Float32Array };
  heads: number;
  /** The picture's visual tokens as the vision tower saw them: the attention its CLS token pays each (head mean). */
  image: { clsAttention: ArrayLike<number> };
  /** Which rows of an attention map score the visual tokens (the pruners that read one). */
  source: ScoreSource | null;
  /** The request's seed. */
  seed: number;
}

export interface Pruner {
  /** The layer whose attention probabilities the prefill must copy out for this pruner, if any. */
  readonly reads?: "twig" | "lower";
  /** A score per visual token, N of them; higher = keep. */
  scores(x: PruneInput): ArrayLike<number>;
}

/**
 * The score of each visual token v_i in one attention map A [heads H, S, S] (decoding/ttp.ts):
 *   last-token:  s_i = (1/H) * sum_h A[h, S-1, v_i]                 the last prompt token's attention
 *   all-text:    s_i = (1/H) * sum_h sum_{t not visual} A[h, t, v_i] the attention of every text token
 */
export function attentionScores(x: PruneInput, probs: Float32Array | undefined): Float64Array {
  invariant(probs && x.source, "attention probabilities and a scorer for a pruner that scores by attention");
  const { positions, visualStart, numVisual } = x.prompt;
  const S = positions.length;
  return visualScores(probs, { heads: x.heads, queries: S, keys: S }, positions, visualStart, numVisual, x.source);
}
