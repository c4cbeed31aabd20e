/**
 * How many tokens a round of the batch drafts (batch/batch-loop.ts), from what rounds of each
 * kind have actually given at this batch size.
 *
 * A round with chain cap c lets each drafter propose up to min(c, its own delta) tokens, stopping
 * at EOS or after a token whose draft probability is below its theta (TwigVLM's own rule), and
 * verifies them in one pass; a round with cap 0 decodes one token a sequence, as `ttp-only` does,
 * and does not even run the twig (its skipped rows catch up, in one run, when drafting resumes).
 * Which cap pays depends on the batch: a lone sequence pays mostly the fixed part of each run, so
 * drafts are nearly free and each accepted one saves a whole round (the whole chain pays); in a
 * large batch every run costs per sequence, each draft position costs a batched run of the lower
 * layers, the twig and its head, and the later positions, accepted less often, no longer pay for
 * theirs, while the first one or two still do (the twig's first draft is its surest). Where the
 * crossings lie depends on the model, the machine and the load, so it is measured, not modelled:
 *
 *   rate[bucket][cap] = tokens the round emitted / the round's time, a moving average
 *                       (time: the wall time, or the process's CPU time meanwhile when less: a
 *                       round that lost its core to other work is not charged for the wait)
 *   bucket            = floor(log2 B) for a batch of B sequences (1, 2-3, 4-7, 8-15, ...)
 *   cap               = one of CAPS: no drafts, 1, 2 or 3 tokens, or each drafter's own delta
 *
 * Each round takes the cap with the highest rate in its bucket; a cap with fewer than MIN_SAMPLES
 * rounds in the bucket is tried first, and every EXPLORE_EVERY-th round of a bucket takes one of
 * the others in turn (every 4 * EXPLORE_EVERY-th when the best is far ahead of every other:
 * exploring costs, a drafting round after many plain ones first runs the twig over every row it
 * skipped), so that a change (the load on the machine, the answers' acceptance) is seen. A round
 * that lost its core for a while (its rate below a third of its cap's) counts as a third of it.
 */

/** The chain caps a round may take: 0 (no drafts), a few tokens, or each drafter's own delta. */
export const CAPS: readonly number[] = [0, 1, 2, 3, Number.POSITIVE_INFINITY];
/** Rounds a cap is tried in a bucket before the rates decide. */
const MIN_SAMPLES = 3;
/** Every this many rounds of a bucket, a cap the rates did not pick (four times as seldom when the best is far ahead). */
const EXPLORE_EVERY = 16;
/** Another cap is close when its rate is above this share of the best one's. */
const CLOSE = 0.85;
/** Weight of a new round in a cap's moving average. */
const SMOOTHING = 0.1;

interface Arm {
  cap: number;
  rate: number;
  samples: number;
}

interface Bucket {
  arms: Arm[];
  rounds: number;
  /** Which of the caps the rates did not pick the next exploring round takes. */
  explored: number;
}

export class DraftPolicy {
  private readonly buckets = new Map<number, Bucket>();

  /** The chain cap of a round of `batch` sequences, some of them drafters: 0 for no drafts. */
  cap(batch: number): number {
    const b = this.bucket(batch);
    b.rounds++;
    const untried = b.arms.reduce((a, x) => (x.samples < a.samples ? x : a));
    if (untried.samples < MIN_SAMPLES) return untried.cap;
    const best = b.arms.reduce((a, x) => (x.rate > a.rate ? x : a));
    const others = b.arms.filter((x) => x !== best);
    // another cap now and then: often while one is close, seldom when the best is far ahead
    const close = others.some((x) => x.rate > CLOSE * best.rate);
    if (b.rounds % (close ? EXPLORE_EVERY : 4 * EXPLORE_EVERY) !== 0) return best.cap;
    b.explored = (b.explored + 1) % others.length;
    return others[b.explored].cap;
  }

  /** A round of `batch` sequences with chain cap `cap` emitted `tokens` tokens in `ms`. */
  record(batch: number, cap: number, tokens: number, ms: number): void {
    const arm = this.bucket(batch).arms.find((a) => a.cap === cap);
    if (!arm) throw new RangeError(`${cap} is not one of the policy's chain caps`);
    let rate = tokens / Math.max(ms, 1e-3);
    if (arm.samples >= MIN_SAMPLES) rate = Math.max(rate, arm.rate / 3);
    arm.samples++;
    // the first rounds as a plain mean, then a moving average
    const w = Math.max(SMOOTHING, 1 / arm.samples);
    arm.rate += w * (rate - arm.rate);
  }

  /** The measured rates (tokens per ms) of a batch size's bucket, by cap, for checks and benchmarks. */
  rates(batch: number): Map<number, number> {
    return new Map(this.bucket(batch).arms.map((a) => [a.cap, a.rate]));
  }

  private bucket(batch: number): Bucket {
    const key = Math.floor(Math.log2(Math.max(1, batch)));
    let b = this.buckets.get(key);
    if (!b) {
      b = { arms: CAPS.map((cap) => ({ cap, rate: 0, samples: 0 })), rounds: 0, explored: 0 };
      this.buckets.set(key, b);
    }
    return b;
  }
}
