/**
 * Token choice from logits: greedy, or sampling with temperature and top-p
 * from a seeded generator, so that a request with a seed is reproducible.
 *
 * `distribution(logits, { temperature, topP })` is the one place where a
 * logit row becomes the probability vector that decoding samples from; the
 * speculative sampler applies the same function to the draft and the target
 * rows, so top-p is applied consistently to both.
 */

export interface SamplingOptions {
  /** 0 = greedy. */
  temperature: number;
  /** (0, 1]; 1 keeps the whole distribution. */
  topP: number;
}

/** A small, fast, seedable PRNG (mulberry32); `next()` is uniform in [0, 1). */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** Index of the largest value; the lowest index wins ties. */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/**
 * softmax(logits / temperature), then the nucleus: keep the most probable
 * tokens whose mass reaches topP (always at least one), zero the rest, renormalise.
 */
export function distribution(logits: ArrayLike<number>, opts: SamplingOptions): Float64Array {
  const n = logits.length;
  const probs = new Float64Array(n);
  if (opts.temperature <= 0) {
    probs[argmax(logits)] = 1;
    return probs;
  }
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    probs[i] = Math.exp((logits[i] - max) / opts.temperature);
    sum += probs[i];
  }
  for (let i = 0; i < n; i++) probs[i] /= sum;
  if (opts.topP < 1) {
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
    let mass = 0;
    let kept = 0;
    while (kept < n && (kept === 0 || mass < opts.topP)) mass += probs[order[kept++]];
    for (let j = kept; j < n; j++) probs[order[j]] = 0;
    for (let i = 0; i < n; i++) probs[i] /= mass;
  }
  return probs;
}

/** softmax(logits)[token] at temperature 1, without building the whole vector. */
export function softmaxAt(logits: ArrayLike<number>, token: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return Math.exp(logits[token] - max) / sum;
}

/** Draws an index from a probability vector (which need not be normalised). */
export function sample(probs: ArrayLike<number>, rng: Rng): number {
  let total = 0;
  for (let i = 0; i < probs.length; i++) total += probs[i];
  let u = rng.next() * total;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    last = i;
    u -= probs[i];
    if (u < 0) return i;
  }
  return last;
}

/** The next token under the options: argmax when greedy, else a draw. */
export function chooseToken(logits: ArrayLike<number>, opts: SamplingOptions, rng: Rng): number {
  if (opts.temperature <= 0) return argmax(logits);
  return sample(distribution(logits, opts), rng);
}
