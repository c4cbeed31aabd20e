/**
 * TTP, twig-guided token pruning: TwigVLM's own pruner.
 *
 * The prompt (text and all N visual tokens) has run through base layers 1..K and the twig's T
 * layers. With A the attention probabilities of the twig's LAST layer, [heads H, S, S], each
 * visual token v_i scores
 *
 *   s_i = (1/H) * sum_h A[h, S-1, v_i]                   the last prompt token's attention (released code)
 *   s_i = (1/H) * sum_h sum_{t text} A[h, t, v_i]        every text token's (the paper's formula)
 *
 * and layers K+1..K_f keep the top R. Why the twig: attention in base layer K is a poor guide to
 * what matters (FastV, fastv.ts); the twig, trained to predict the answer, attends to what does.
 */
import { attentionScores, type Pruner } from "./pruner.js";

export const twig: Pruner = {
  reads: "twig",
  scores: (x) => attentionScores(x, x.twig?.attentionProbs),
};
