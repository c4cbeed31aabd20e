/**
 * Twig-guided token pruning: which visual tokens the middle layers keep.
 *
 * The twig's last layer attends over the prompt. Its attention probabilities,
 * averaged over heads, score each visual token: by the attention the last
 * prompt token pays it (the released code, the default), or summed over all
 * text tokens (the paper's formula, FastV-style). The top R by score are kept,
 * reported in their original order (they keep their original positions).
 * The same score read from base layer K's attention is FastV's; the pruners that
 * use it, and the others, are in ../pruning/.
 */
import { SCORE_SOURCE_NUMBER, type ScoreSourceName } from "@twigserve/proto/twigvlm/v1/names.js";

/** The scorers, by the names a twig config, the eval's --score-source, the engine and the API use (the proto's). */
export type ScoreSource = ScoreSourceName;
export const SCORE_SOURCES = Object.keys(SCORE_SOURCE_NUMBER) as ScoreSource[];

export function isScoreSource(name: unknown): name is ScoreSource {
  return SCORE_SOURCES.includes(name as ScoreSource);
}

/**
 * @param probs attention probabilities of one layer, [heads, queries, keys], row-major
 * @param queryPositions the prompt position of each query row
 * @param visualStart key index of the first visual token; visual tokens are keys visualStart..visualStart+n-1
 */
export function visualScores(
  probs: Float32Array,
  shape: { heads: number; queries: number; keys: number },
  queryPositions: readonly number[],
  visualStart: number,
  numVisual: number,
  source: ScoreSource,
): Float64Array {
  const { heads, queries, keys } = shape;
  if (probs.length !== heads * queries * keys) throw new RangeError("attention probabilities do not match their shape");
  const rows: number[] = [];
  if (source === "last-token") rows.push(queries - 1);
  else {
    // every text query: the ones outside the visual span
    for (let r = 0; r < queries; r++) {
      const pos = queryPositions[r];
      if (pos < visualStart || pos >= visualStart + numVisual) rows.push(r);
    }
  }
  const scores = new Float64Array(numVisual);
  for (let h = 0; h < heads; h++) {
    for (const r of rows) {
      const base = (h * queries + r) * keys + visualStart;
      for (let v = 0; v < numVisual; v++) scores[v] += probs[base + v] / heads;
    }
  }
  return scores;
}

/** Indices of the R highest scores, sorted ascending; ties go to the lower index. */
export function topR(scores: ArrayLike<number>, r: number): number[] {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  return order.slice(0, Math.max(0, Math.min(r, scores.length))).sort((a, b) => a - b);
}
