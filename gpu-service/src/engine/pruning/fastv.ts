/**
 * FastV's baseline: the same score as TTP's (twig.ts) read from base layer K's attention instead
 * of the twig's, i.e. with A the attention probabilities of base layer K, [heads H, S, S],
 *
 *   s_i = (1/H) * sum_h A[h, S-1, v_i]   (last-token)   or   (1/H) * sum_h sum_{t text} A[h, t, v_i]   (all-text)
 *
 * under the same R and FinalWipe rules. (The paper's ablation: pruning by base layer K's attention
 * keeps 82.3% of the base model's accuracy, by the twig's 96.0%.)
 */
import { attentionScores, type Pruner } from "./pruner.js";

export const fastv: Pruner = {
  reads: "lower",
  scores: (x) => attentionScores(x, x.lower.attentionProbs),
};
