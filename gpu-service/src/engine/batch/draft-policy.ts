/**
 * How many tokens a round of the batch drafts (batch/batch-loop.ts), from what drafting costs now
 * and what it brings.
 *
 * Cost: every batched run's time is measured and fitted, per segment, as a fixed part and a part
 * per row, t = a + b * rows (least squares over recent runs, older ones weighing less). With B
 * sequences of which D draft, a round that drafts up to n tokens costs
 *   extend:  lower(B) + twig(D)                           (paid whatever n)
 *   draft:   n * (twig head(D) + lower(B) + twig(D))      (one batched run per draft position)
 *   verify:  mid(B * (1 + n)) + top(B * (1 + n)) + head   (rows padded to the longest chain)
 * Gain: a drafter whose drafts are accepted at rate alpha (its own, measured) emits
 * E(n) = 1 + alpha + ... + alpha^n tokens a round (the accepted drafts and the bonus); every
 * other sequence emits 1. The round drafts the n in 0..delta with the most tokens per
 * millisecond. A lone sequence on an idle machine pays mostly fixed parts, so drafts are
 * nearly free and n is large; in a large batch the per-row parts dominate, each draft costs
 * about what the token it may save costs, and n falls to 0: `twig` then decodes as `ttp-only`
 * does, and its twig is not even run (the skipped rows catch up when drafting resumes).
 */

/** A segment's run time as a + b * rows, fitted online. */
export class RunCost {
  private w = 0;
  private sx = 0;
  private sy = 0;
  private sxx = 0;
  private sxy = 0;

  constructor(private readonly decay = 0.97) {}

  add(rows: number, ms: number): void {
    const d = this.decay;
    this.w = this.w * d + 1;
    this.sx = this.sx * d + rows;
    this.sy = this.sy * d + ms;
    this.sxx = this.sxx * d + rows * rows;
    this.sxy = this.sxy * d + rows * ms;
  }

  /** Predicted ms for a run of `rows` rows (0 before any run was seen). */
  predict(rows: number): number {
    if (this.w === 0) return 0;
    const mx = this.sx / this.w;
    const my = this.sy / this.w;
    const vx = this.sxx / this.w - mx * mx;
    // rows seen all alike: no slope to fit yet; take half the time as fixed, half as per row
    const b = vx > 1e-6 * (mx * mx + 1) ? Math.max(0, (this.sxy / this.w - mx * my) / vx) : my / 2 / Math.max(mx, 1);
    const a = Math.max(0, my - b * mx);
    return a + b * rows;
  }
}

export interface RoundShape {
  /** Sequences in the batch. */
  batch: number;
  /** Acceptance rate of each drafter (those that may draft this round). */
  alphas: readonly number[];
  /** Most drafts any of them may take. */
  delta: number;
}

export interface SegmentCosts {
  lower: RunCost;
  twig: RunCost;
  twigHead: RunCost;
  mid: RunCost;
  top: RunCost;
  head: RunCost;
}

/** The draft length n (0..delta) with the most expected tokens per ms this round. */
export function chooseDraftLength(shape: RoundShape, c: SegmentCosts): number {
  const { batch: B, alphas, delta } = shape;
  const D = alphas.length;
  if (D === 0 || delta <= 0) return 0;
  let best = 0;
  let bestRate = -1;
  for (let n = 0; n <= delta; n++) {
    const tokens = B - D + alphas.reduce((a, alpha) => a + expectedTokens(alpha, n), 0);
    const extend = c.lower.predict(B) + (n > 0 ? c.twig.predict(D) : 0);
    const draft = n * (c.twigHead.predict(D) + c.lower.predict(B) + c.twig.predict(D));
    const rows = B * (1 + n);
    const verify = c.mid.predict(rows) + c.top.predict(rows) + c.head.predict(B + n * D);
    const rate = tokens / Math.max(extend + draft + verify, 1e-6);
    if (rate > bestRate) {
      bestRate = rate;
      best = n;
    }
  }
  return best;
}

/** 1 + alpha + ... + alpha^n: a drafter's tokens a round with up to n drafts accepted at rate alpha. */
export function expectedTokens(alpha: number, n: number): number {
  let sum = 1;
  let p = 1;
  for (let i = 0; i < n; i++) {
    p *= alpha;
    sum += p;
  }
  return sum;
}
