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
 *                       (time: the wall time less the time the engine thread waited for a core,
 *                       from Linux's schedstat: a round that lost its core to other work, such as
 *                       another engine worker or the service's own thread, is not charged for the
 *                       wait)
 *   bucket            = floor(log2 B) for a batch of B sequences (1, 2-3, 4-7, 8-15, ...)
 *   cap               = one of CAPS: no drafts, 1, 2 or 3 tokens, or each drafter's own delta
 *
 * Each round takes the cap with the highest rate in its bucket; a cap with fewer than MIN_SAMPLES
 * rounds in the bucket is tried first, and every EXPLORE_EVERY-th round of a bucket takes one of
 * the others in turn (every 4 * EXPLORE_EVERY-th when the best is far ahead of every other:
 * exploring costs, a drafting round after many plain ones first runs the twig over every row it
 * skipped), so that a change (the load on the machine, the answers' acceptance) is seen. A round
 * that lost its core for a while (its rate below a third of its cap's) counts as a third of it.
 *
 * Two things keep the trying cheap where rounds are costly (a large model, short answers, few
 * rounds in each bucket). The first is the drafts' acceptance, which belongs to the requests and
 * the twig, not to the batch size, and so is kept once for all buckets:
 *
 *   pi_j      = of the drafters a round allowed a j-th draft, the share whose j-th draft was
 *               proposed and accepted (a moving average over rounds; no more than pi_{j-1}, as
 *               a j-th draft is accepted only after the one before it: so for a position fewer
 *               than MIN_SAMPLES rounds have allowed, pi_{j-1})
 *   A(c)      = sum_b sum_{j <= min(c, room_b)} pi_j, the drafts a round of cap c should have
 *               accepted (room_b: drafter b's delta, or the tokens it has left when fewer)
 *   bound(c)  = min over measured caps c' < c of  rate[bucket][c'] * (B + A(c)) / (B + A(c'))
 *
 * A round of cap c drafts every chain a round of cap c' < c drafts and maybe more, so it takes no
 * less time, and it emits B + A(c) tokens on average: bound(c) is the most its rate can be. A cap
 * whose bound is not MIN_GAIN above the best measured rate cannot win (its drafting costs time the
 * bound leaves out: a chain whose drafts are all rejected has A(c) = 0 and the bound of no drafts):
 * it is neither tried first nor explored while another cap can win; when none can, one of them is
 * explored every 16 * EXPLORE_EVERY-th round of the bucket, only to measure the acceptance again
 * (it changes with the requests, and only drafting rounds measure it). The first caps are tried
 * smallest first, so that a twig whose drafts are nearly all rejected (random weights': it proposes
 * one draft, below theta, and stops) costs three drafting rounds, and then one in 256 of a bucket.
 * The second: a bucket seen for the first time tries first only the caps its nearest explored
 * bucket found within CLOSE of its best, and those on the side the batch size moved to (a larger
 * batch: every smaller cap; a smaller one: every larger); the others are explored in turn, as
 * always. (An earlier version took the close ones alone: a bucket of 4-7 sequences inherited long
 * chains from the buckets of fewer, never measured one draft, the best at 8 sequences, and drafted
 * three tokens a sequence, which the bucket of 8 measured at about half the tokens per ms of one;
 * in one in-process run at 8 streams `twig` gave 609 tok/s against 732 with a fixed cap of one.)
 */

/** The chain caps a round may take: 0 (no drafts), a few tokens, or each drafter's own delta. */
export const CAPS: readonly number[] = [0, 1, 2, 3, Number.POSITIVE_INFINITY];
/** Rounds a cap is tried in a bucket before the rates decide. */
const MIN_SAMPLES = 3;
/** Every this many rounds of a bucket, a cap the rates did not pick (four times as seldom when the best is far ahead). */
const EXPLORE_EVERY = 16;
/** Another cap is close when its rate is above this share of the best one's. */
const CLOSE = 0.85;
/** A cap whose bound is not above the best measured rate by this share cannot win (drafting costs time too). */
const MIN_GAIN = 0.02;
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
  /** The caps tried first (MIN_SAMPLES rounds each) before the rates decide. */
  first: ReadonlySet<number>;
  /** Every cap it tries first has been tried (or ruled out). */
  settled: boolean;
}

/** A drafter's share of a round: the drafts it was allowed, those it proposed, those accepted. */
export interface DraftOutcome {
  room: number;
  drafted: number;
  accepted: number;
}

/** Draft positions whose acceptance is kept apart (later ones share the last one's). */
const POSITIONS = 8;
/** Weight of a new round in a position's acceptance average. */
const ACCEPT_SMOOTHING = 0.1;

export class DraftPolicy {
  private readonly buckets = new Map<number, Bucket>();
  /** pi_j for j = 1..POSITIONS, and the rounds behind each (before any: 1, no cap is ruled out). */
  private readonly accept = Array.from({ length: POSITIONS }, () => ({ pi: 1, rounds: 0 }));

  /**
   * The chain cap of a round of `batch` sequences, some of them drafters: 0 for no drafts.
   * `rooms`: each drafter's most drafts this round (its delta, or the tokens it has left when fewer).
   */
  cap(batch: number, rooms: readonly number[] = []): number {
    const b = this.bucket(batch);
    b.rounds++;
    const measured = b.arms.filter((a) => a.samples >= MIN_SAMPLES);
    const best = measured.length > 0 ? measured.reduce((a, x) => (x.rate > a.rate ? x : a)) : undefined;
    // A(c) for every cap, once a round; a cap whose most possible rate is below the best measured one's cannot win
    const accepted = new Map(CAPS.map((c) => [c, this.accepted(c, rooms)]));
    const hopeless = (a: Arm) =>
      best !== undefined && this.bound(b, a.cap, batch, accepted) < (1 + MIN_GAIN) * best.rate;
    // the caps to try first, smallest first (so that the bounds can rule the larger ones out)
    const untried = b.arms.find((a) => b.first.has(a.cap) && a.samples < MIN_SAMPLES && !hopeless(a));
    if (untried) return untried.cap;
    if (!best) return b.arms[0].cap;
    b.settled = true;
    // another cap now and then: often while one is close, seldom when the best is far ahead, and
    // one the acceptance rules out only to see whether the acceptance changed (when no other is left)
    const others = b.arms.filter((x) => x !== best);
    const hopeful = others.filter((x) => !hopeless(x));
    const close = hopeful.some((x) => x.samples > 0 && x.rate > CLOSE * best.rate);
    const every = close ? EXPLORE_EVERY : hopeful.length > 0 ? 4 * EXPLORE_EVERY : 16 * EXPLORE_EVERY;
    if (b.rounds % every !== 0) return best.cap;
    const pool = hopeful.length > 0 ? hopeful : others;
    b.explored = (b.explored + 1) % pool.length;
    return pool[b.explored].cap;
  }

  /**
   * A round of `batch` sequences with chain cap `cap` emitted `tokens` tokens in `ms`; `drafts`:
   * each drafter's share of it, for the drafts' acceptance (pi).
   */
  record(batch: number, cap: number, tokens: number, ms: number, drafts: readonly DraftOutcome[] = []): void {
    const arm = this.bucket(batch).arms.find((a) => a.cap === cap);
    if (!arm) throw new RangeError(`${cap} is not one of the policy's chain caps`);
    let rate = tokens / Math.max(ms, 1e-3);
    if (arm.samples >= MIN_SAMPLES) rate = Math.max(rate, arm.rate / 3);
    arm.samples++;
    // the first rounds as a plain mean, then a moving average
    const w = Math.max(SMOOTHING, 1 / arm.samples);
    arm.rate += w * (rate - arm.rate);
    if (cap > 0) this.recordAcceptance(drafts);
  }

  /** The measured rates (tokens per ms) of a batch size's bucket, by cap, for checks and benchmarks. */
  rates(batch: number): Map<number, number> {
    return new Map(this.bucket(batch).arms.map((a) => [a.cap, a.rate]));
  }

  /** pi_1..pi_POSITIONS as measured so far (1 where no round has allowed that many drafts). */
  acceptance(): number[] {
    return this.accept.map((a) => a.pi);
  }

  /** pi_j from one round: of the drafters allowed a j-th draft, the share whose j-th was proposed and accepted. */
  private recordAcceptance(drafts: readonly DraftOutcome[]): void {
    for (let j = 1; j <= POSITIONS; j++) {
      const chances = drafts.filter((d) => d.room >= j);
      if (chances.length === 0) break;
      const share = chances.filter((d) => d.drafted >= j && d.accepted >= j).length / chances.length;
      const a = this.accept[j - 1];
      a.rounds++;
      a.pi += Math.max(ACCEPT_SMOOTHING, 1 / a.rounds) * (share - a.pi);
    }
  }

  /**
   * bound(c): the most tokens per ms a round of cap c can give, from a smaller cap's measured rate
   * (the tightest): its rate times the tokens c can add over it (Infinity: none measured yet);
   * `accepted`: A(c) of every cap.
   */
  private bound(b: Bucket, cap: number, batch: number, accepted: ReadonlyMap<number, number>): number {
    const gives = (c: number) => batch + (accepted.get(c) as number);
    let most = Number.POSITIVE_INFINITY;
    for (const a of b.arms)
      if (a.cap < cap && a.samples > 0) most = Math.min(most, (a.rate * gives(cap)) / gives(a.cap));
    return most;
  }

  /**
   * The drafts a round of cap c should have accepted: sum_b sum_{j <= min(c, room_b)} pi_j, where a
   * position fewer than MIN_SAMPLES rounds have allowed counts as the one before it (a j-th draft is
   * accepted only after the (j-1)-th was, so pi_j <= pi_{j-1}; one round's share is too noisy to rule
   * a cap out on).
   */
  private accepted(cap: number, rooms: readonly number[]): number {
    let n = 0;
    for (const room of rooms) {
      let pi = 1;
      for (let j = 1; j <= Math.min(cap, room); j++) {
        const a = this.accept[Math.min(j, POSITIONS) - 1];
        if (a.rounds >= MIN_SAMPLES) pi = Math.min(pi, a.pi);
        n += pi;
      }
    }
    return n;
  }

  private bucket(batch: number): Bucket {
    const key = Math.floor(Math.log2(Math.max(1, batch)));
    let b = this.buckets.get(key);
    if (!b) {
      const arms = CAPS.map((cap) => ({ cap, rate: 0, samples: 0 }));
      b = { arms, rounds: 0, explored: 0, first: this.firstCaps(key), settled: false };
      this.buckets.set(key, b);
    }
    return b;
  }

  /**
   * What a new bucket tries first: the caps within CLOSE of the best in the nearest explored bucket,
   * and every cap on the side the batch size moved to: the smaller ones for a larger batch (drafts
   * pay less there), the larger ones for a smaller batch (all when no bucket is explored yet).
   */
  private firstCaps(key: number): ReadonlySet<number> {
    let near: Bucket | undefined;
    let nearKey = key;
    let distance = Number.POSITIVE_INFINITY;
    for (const [k, b] of this.buckets) {
      if (b.settled && Math.abs(k - key) < distance) {
        near = b;
        nearKey = k;
        distance = Math.abs(k - key);
      }
    }
    const known = near?.arms.filter((a) => a.samples >= MIN_SAMPLES) ?? [];
    if (known.length === 0) return new Set(CAPS);
    const best = known.reduce((a, x) => (x.rate > a.rate ? x : a));
    const close = known.filter((a) => a.rate >= CLOSE * best.rate).map((a) => a.cap);
    const side = CAPS.filter((c) => (key > nearKey ? c < best.cap : c > best.cap));
    return new Set([...close, ...side]);
  }
}
