/**
 * The visual-token budget of TTP. The paper quotes R-bar, the average number
 * of visual tokens per layer over all L layers: layers 1..K see all N, layers
 * K+1..K_f see the R kept ones, layers after K_f see none, so
 *
 *   R-bar = (N*K + R*(K_f - K)) / L   =>   R = ceil((L*R-bar - N*K) / (K_f - K))
 *
 * For LLaVA-1.5 (N=576, K=2, K_f=24, L=32), R-bar 64/128/192 gives R = 41/134/227.
 */

export interface BudgetShape {
  /** N: visual tokens the image produces. */
  visualTokens: number;
  /** L: decoder layers. */
  numLayers: number;
  /** K: base layers before the twig. */
  k: number;
  /** K_f (1-based): layers after it see no visual tokens. */
  finalWipeLayer: number;
}

/** The smallest R-bar the shape allows (R = 0): N*K/L. */
export function minRetainBudget(s: BudgetShape): number {
  return (s.visualTokens * s.k) / s.numLayers;
}

/** The largest R-bar the shape allows (R = N). */
export function maxRetainBudget(s: BudgetShape): number {
  return (s.visualTokens * s.finalWipeLayer) / s.numLayers;
}

/** R, the visual tokens kept in layers K+1..K_f, for an R-bar budget; throws when the budget is out of range. */
export function keptTokensForBudget(retainBudget: number, s: BudgetShape): number {
  if (!(s.k >= 0 && s.finalWipeLayer > s.k && s.finalWipeLayer <= s.numLayers)) {
    throw new RangeError(`invalid layer split: K=${s.k}, K_f=${s.finalWipeLayer}, L=${s.numLayers}`);
  }
  const lo = minRetainBudget(s);
  const hi = maxRetainBudget(s);
  if (!(retainBudget >= lo && retainBudget <= hi)) {
    throw new RangeError(
      `retain budget ${retainBudget} is outside [${lo}, ${hi}] for N=${s.visualTokens}, K=${s.k}, K_f=${s.finalWipeLayer}, L=${s.numLayers}`,
    );
  }
  const r = Math.ceil((s.numLayers * retainBudget - s.visualTokens * s.k) / (s.finalWipeLayer - s.k) - 1e-9);
  return Math.min(s.visualTokens, Math.max(0, r));
}

/** A share of visual tokens to prune: a number strictly between 0 and 1. */
export function isPrunedFraction(f: unknown): f is number {
  return typeof f === "number" && f > 0 && f < 1;
}

/** The R-bar that prunes the given fraction of visual tokens (e.g. 8/9 for "88.9% pruned"). */
export function budgetForPrunedFraction(fraction: number, visualTokens: number): number {
  return Math.round(visualTokens * (1 - fraction));
}

/**
 * The budget used when a request names none. A model may name its own share to prune (`prunedFraction`,
 * its twig config's `default_pruned_fraction`): R-bar = round(N (1 - f)) of the request's N, where that
 * lies in the shape's range and keeps a token above K. Otherwise the paper's headline, R-bar = N/9
 * ("88.9% pruned": R = 41 of 576 on LLaVA-1.5). On a shallower model, where layers 1..K alone average
 * more than that (N*K/L > N/9, so R would be 0 and the layers above K blind), the smallest whole R-bar
 * that keeps the same share of visual tokens above K: R >= N * 41/576.
 */
export function defaultRetainBudget(s: BudgetShape, prunedFraction?: number): number {
  if (prunedFraction !== undefined) {
    const own = budgetForPrunedFraction(prunedFraction, s.visualTokens);
    if (own >= minRetainBudget(s) && own <= maxRetainBudget(s) && keptTokensForBudget(own, s) > 0) return own;
  }
  const headline = Math.round(s.visualTokens / 9);
  if (headline >= minRetainBudget(s) && keptTokensForBudget(headline, s) > 0) return headline;
  const r = Math.ceil((s.visualTokens * 41) / 576);
  return Math.ceil((s.visualTokens * s.k + r * (s.finalWipeLayer - s.k)) / s.numLayers);
}
