/**
 * SSD's two rules: how a draft token is proposed, and how a drafted chain is verified.
 *
 * Proposal (twig/drafter.ts runs it token by token): from the twig's logits z, greedy takes
 * d = argmax z with confidence p = softmax(z)[d]; sampling draws d ~ q = norm(top-p(softmax(z / T)))
 * with p = q(d). Drafting stops after a token that is EOS or has p < theta.
 *
 * Verification. The twig drafted d_0..d_{n-1}; the
 * full model, in one pass over them, produced n+1 logit rows: row i is its
 * prediction for the position of d_i (row n is for the position after the
 * last draft).
 *
 * Greedy (the paper): accept the longest prefix with d_i = argmax(row i),
 * then append argmax(row accepted) — the "bonus" token. The result is the full
 * model's greedy output exactly.
 *
 * Sampling (beyond the paper; Leviathan et al. / Chen et al.): with p = the
 * full model's distribution (target) and q = the twig's (draft), both through
 * the same temperature and top-p, accept d_i with probability
 * min(1, p(d_i) / q(d_i)); at the first rejection draw from the residual
 * norm(max(0, p - q)) and stop; if all are accepted draw the bonus from p of
 * row n. Each emitted token is then distributed exactly as p.
 */
import { argmax, distribution, type Rng, type SamplingOptions, sample, softmaxAt } from "./sampling.js";

/** A drafted token and the twig's confidence in it. */
export interface Proposal {
  token: number;
  /** p: the draft probability of `token`, which drafting checks against theta. */
  p: number;
  /** q: the distribution the token was drawn from (sampling only), which verification needs. */
  q?: Float64Array;
}

/**
 * One draft token from the twig's logits z. Greedy: d = argmax z, p = softmax(z)[d]. Sampling:
 * d ~ q = distribution(z) (the request's temperature and top-p, as for the target), p = q[d].
 */
export function proposeDraft(logits: ArrayLike<number>, opts: SamplingOptions, rng: Rng): Proposal {
  if (opts.temperature > 0) {
    const q = distribution(logits, opts);
    const token = sample(q, rng);
    return { token, p: q[token], q };
  }
  const token = argmax(logits);
  return { token, p: softmaxAt(logits, token) };
}

export interface Verdict {
  /** How many drafted tokens were accepted (0..n). */
  accepted: number;
  /** The full model's own token after the accepted prefix. */
  bonus: number;
}

/** Greedy verification: `targetLogits[i]` is the full model's logit row for draft position i (n+1 rows). */
export function verifyGreedy(drafted: readonly number[], targetLogits: readonly ArrayLike<number>[]): Verdict {
  let accepted = 0;
  while (accepted < drafted.length && argmax(targetLogits[accepted]) === drafted[accepted]) accepted++;
  return { accepted, bonus: argmax(targetLogits[accepted]) };
}

/**
 * Speculative sampling. `draftProbs[i]` is q for draft position i (the distribution d_i was drawn from,
 * already through `distribution`); `targetLogits` has n+1 rows.
 */
export function verifySampled(
  drafted: readonly number[],
  draftProbs: readonly ArrayLike<number>[],
  targetLogits: readonly ArrayLike<number>[],
  opts: SamplingOptions,
  rng: Rng,
): Verdict {
  for (let i = 0; i < drafted.length; i++) {
    const p = distribution(targetLogits[i], opts);
    const q = draftProbs[i];
    const token = drafted[i];
    // accept with probability min(1, p/q)
    if (q[token] > 0 && rng.next() < Math.min(1, p[token] / q[token])) continue;
    // rejected: draw from the normalised residual max(0, p - q)
    const residual = new Float64Array(p.length);
    let mass = 0;
    for (let j = 0; j < p.length; j++) {
      residual[j] = Math.max(0, p[j] - q[j]);
      mass += residual[j];
    }
    return { accepted: i, bonus: mass > 0 ? sample(residual, rng) : sample(p, rng) };
  }
  return { accepted: drafted.length, bonus: sample(distribution(targetLogits[drafted.length], opts), rng) };
}
