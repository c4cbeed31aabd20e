/**
 * Whether a round of the batch drafts (batch/batch-loop.ts), from what rounds that drafted and
 * rounds that did not have actually given at this batch size.
 *
 * A round that drafts lets each drafter propose up to its own delta tokens, stopping at EOS or
 * after a token whose draft probability is below its theta (TwigVLM's own rule), and verifies them
 * in one pass; a round that does not draft decodes one token a sequence, as `ttp-only` does, and
 * does not even run the twig (its skipped rows catch up, in one run, when drafting resumes). Which
 * pays depends on the batch: a lone sequence pays mostly the fixed part of each run, so drafts are
 * nearly free and each accepted one saves a whole round; in a large batch every run costs per
 * sequence, a draft position costs about what the token it may save costs, and rounds without
 * drafts give more tokens per millisecond. Where the crossing lies depends on the model, the
 * machine and the load, so it is measured, not modelled:
 *
 *   rate[bucket][arm] = tokens the round emitted / the round's time, a moving average
 *                       (time: the wall time, or the process's CPU time meanwhile when less: a
 *                       round that lost its core to other work is not charged for the wait)
 *   bucket            = floor(log2 B) for a batch of B sequences (1, 2-3, 4-7, 8-15, ...)
 *   arm               = drafts or not
 *
 * Each round takes the arm with the higher rate in its bucket; an arm with fewer than MIN_SAMPLES
 * rounds in the bucket is tried first, and every EXPLORE_EVERY-th round of a bucket takes the other
 * arm (every 4 * EXPLORE_EVERY-th when one is far ahead: exploring costs, a drafting round after
 * many plain ones first runs the twig over every row it skipped), so that a change (the load on
 * the machine, the answers' acceptance) is seen. A round that
 * lost its core for a while (its rate below a third of the arm's) counts as a third of the arm's.
 */

/** Rounds an arm is tried in a bucket before the rates decide. */
const MIN_SAMPLES = 3;
/** Every this many rounds of a bucket, the arm the rates did not pick (four times as seldom when one arm is far ahead). */
const EXPLORE_EVERY = 16;
/** Two arms are close when the lower rate is above this share of the higher. */
const CLOSE = 0.85;
/** Weight of a new round in an arm's moving average. */
const SMOOTHING = 0.1;

interface Arm {
  rate: number;
  samples: number;
}

export class DraftPolicy {
  private readonly buckets = new Map<number, { arms: [Arm, Arm]; rounds: number }>();

  /** Whether a round of `batch` sequences, some of them drafters, drafts. */
  drafts(batch: number): boolean {
    const b = this.bucket(batch);
    b.rounds++;
    const [off, on] = b.arms;
    if (on.samples < MIN_SAMPLES || off.samples < MIN_SAMPLES) return on.samples <= off.samples;
    const best = on.rate >= off.rate;
    // the other arm now and then: often while the two are close, seldom when one is far ahead
    const close = Math.min(on.rate, off.rate) > CLOSE * Math.max(on.rate, off.rate);
    return b.rounds % (close ? EXPLORE_EVERY : 4 * EXPLORE_EVERY) === 0 ? !best : best;
  }

  /** A round of `batch` sequences that drafted (or not) emitted `tokens` tokens in `ms`. */
  record(batch: number, drafted: boolean, tokens: number, ms: number): void {
    const arm = this.bucket(batch).arms[drafted ? 1 : 0];
    let rate = tokens / Math.max(ms, 1e-3);
    if (arm.samples >= MIN_SAMPLES) rate = Math.max(rate, arm.rate / 3);
    arm.samples++;
    // the first rounds as a plain mean, then a moving average
    const w = Math.max(SMOOTHING, 1 / arm.samples);
    arm.rate += w * (rate - arm.rate);
  }

  /** The measured rates (tokens per ms) of a batch size's bucket, for checks and benchmarks. */
  rates(batch: number): { drafting: number; plain: number } {
    const [off, on] = this.bucket(batch).arms;
    return { drafting: on.rate, plain: off.rate };
  }

  private bucket(batch: number) {
    const key = Math.floor(Math.log2(Math.max(1, batch)));
    let b = this.buckets.get(key);
    if (!b) {
      b = {
        arms: [
          { rate: 0, samples: 0 },
          { rate: 0, samples: 0 },
        ],
        rounds: 0,
      };
      this.buckets.set(key, b);
    }
    return b;
  }
}
