/**
 * TTP's scoring and top-R, written again from TWIGVLM.md for the tests, sharing
 * no code with the engine's decoding (gpu-service/src/engine/decoding/ttp.ts):
 *
 *   score(v) = mean over heads of A[h][last][v]                  (last-token, the released code)
 *   score(v) = sum over text queries t of mean over heads A[h][t][v]   (all-text, the paper's formula)
 *
 * where A is the attention probabilities of the scoring layer and v runs over
 * the visual keys. The kept set is the R highest scores; of equal scores the
 * lower index goes first (the rule the engine promises), reported ascending.
 */

export type Scorer = "last-token" | "all-text";

/**
 * @param probs attention probabilities [heads][query][key] of one layer over the whole prompt
 *   (query i and key i are prompt position i)
 * @param visualStart prompt position of the first visual token
 * @param numVisual visual tokens N
 */
export function referenceVisualScores(
  probs: readonly (readonly (readonly number[] | Float64Array)[])[],
  visualStart: number,
  numVisual: number,
  scorer: Scorer,
): number[] {
  const heads = probs.length;
  const queries = probs[0].length;
  const isText = (t: number) => t < visualStart || t >= visualStart + numVisual;
  const scored = scorer === "last-token" ? [queries - 1] : [...Array(queries).keys()].filter(isText);
  return Array.from({ length: numVisual }, (_, v) => {
    let total = 0;
    for (const t of scored) {
      let headMean = 0;
      for (let h = 0; h < heads; h++) headMean += probs[h][t][visualStart + v];
      total += headMean / heads;
    }
    return total;
  });
}

/** The R best indices by repeated selection of the highest remaining score (lower index on ties), ascending. */
export function referenceTopR(scores: ArrayLike<number>, r: number): number[] {
  const taken = new Array<boolean>(scores.length).fill(false);
  const kept: number[] = [];
  for (let n = 0; n < Math.min(r, scores.length); n++) {
    let best = -1;
    for (let i = 0; i < scores.length; i++) if (!taken[i] && (best < 0 || scores[i] > scores[best])) best = i;
    taken[best] = true;
    kept.push(best);
  }
  return kept.sort((a, b) => a - b);
}

/** Whether the R-th and (R+1)-th highest scores are exactly equal (a tie the top R could break either way). */
export function tieAtBoundary(scores: ArrayLike<number>, r: number): boolean {
  const sorted = Array.from(scores).sort((a, b) => b - a);
  return r > 0 && r < sorted.length && sorted[r - 1] === sorted[r];
}
