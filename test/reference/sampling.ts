/**
 * The sampling distribution and the speculative acceptance rule, written again
 * for the tests from their definitions, sharing no code with the engine's
 * decoding (gpu-service/src/engine/decoding/sampling.ts, speculative.ts).
 *
 * Distribution: p = softmax(logits / T); top-p keeps the smallest set of the most
 * probable tokens whose mass reaches P (token i is in it when the tokens ranked
 * before it, by probability and then index, hold less than P), renormalised.
 * T = 0 is greedy: all mass on the first highest logit.
 *
 * Speculative sampling (Leviathan et al., Chen et al.): a draft token x drawn from
 * q is accepted with probability min(1, p(x)/q(x)); on rejection the token is
 * drawn from the normalised residual max(0, p - q). So, for one drafted position,
 *   P(accept, x) = q(x) * min(1, p(x)/q(x)) = min(p(x), q(x))
 *   P(reject, x) = P(reject) * max(0, p(x) - q(x)) / sum max(0, p - q) = max(0, p(x) - q(x))
 * since P(reject) = 1 - sum min(p, q) = sum max(0, p - q); the emitted token is p-distributed.
 */

export function referenceDistribution(logits: ArrayLike<number>, temperature: number, topP: number): number[] {
  const n = logits.length;
  const values = Array.from(logits);
  if (temperature <= 0) {
    const best = values.indexOf(Math.max(...values));
    return values.map((_, i) => (i === best ? 1 : 0));
  }
  const top = Math.max(...values);
  const weights = values.map((l) => Math.exp((l - top) / temperature));
  const z = weights.reduce((a, b) => a + b, 0);
  const p = weights.map((w) => w / z);
  if (topP >= 1) return p;
  const before = (i: number, j: number) => p[j] > p[i] || (p[j] === p[i] && j < i); // j ranks before i
  const inNucleus = p.map((_, i) => {
    let mass = 0;
    for (let j = 0; j < n; j++) if (before(i, j)) mass += p[j];
    return mass < topP;
  });
  const kept = p.reduce((a, pi, i) => a + (inNucleus[i] ? pi : 0), 0);
  return p.map((pi, i) => (inNucleus[i] ? pi / kept : 0));
}

/** One drafted position's outcomes: P(accept, x) and P(reject, then x drawn), for target p and draft q. */
export function speculativeOutcome(p: readonly number[], q: readonly number[]): { accept: number[]; reject: number[] } {
  return { accept: p.map((pi, i) => Math.min(pi, q[i])), reject: p.map((pi, i) => Math.max(0, pi - q[i])) };
}

/** A seedable generator for the tests' own draws (xorshift32), separate from the engine's. */
export class TestRng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s / 4294967296;
  }
  /** An index drawn from a probability vector by inversion. */
  draw(p: readonly number[]): number {
    let u = this.next();
    for (let i = 0; i < p.length; i++) {
      if (p[i] <= 0) continue;
      if (u < p[i]) return i;
      u -= p[i];
    }
    return p.findLastIndex((x) => x > 0);
  }
}

/**
 * Pearson's chi-square of observed counts against expected probabilities, and its critical value
 * at significance 0.001 (Wilson-Hilferty). Cells whose expected count is below 5 are pooled;
 * a count in a cell of probability 0 is reported as `impossible`.
 */
export function chiSquare(counts: readonly number[], probs: readonly number[]) {
  const total = counts.reduce((a, b) => a + b, 0);
  let chi2 = 0;
  let cells = 0;
  let impossible = 0;
  let pooled = [0, 0];
  counts.forEach((c, i) => {
    const e = probs[i] * total;
    if (probs[i] === 0) impossible += c;
    else if (e < 5) pooled = [pooled[0] + c, pooled[1] + e];
    else {
      chi2 += (c - e) ** 2 / e;
      cells++;
    }
  });
  if (pooled[1] > 0) {
    chi2 += (pooled[0] - pooled[1]) ** 2 / pooled[1];
    cells++;
  }
  const df = Math.max(1, cells - 1);
  const z = 3.0902;
  return { chi2, df, critical: df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3, impossible };
}
