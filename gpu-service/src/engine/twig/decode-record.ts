/**
 * A decoding run's statistics, recorded beside the loop rather than in it: the loop tells an
 * observer what happened, in two calls of O(1) per round, and the result's statistics are
 * assembled from what the observer heard once the run is over:
 *
 *   prefillMs  time until the first pass of the full path returned: the prompt's rows above K
 *              (in SSD modes that pass also verified the first drafts)
 *   decodeMs   the rest of the run
 *   steps      in the drafting modes, one entry per verification: the drafts d_1..d_n and how many
 *              the full model accepted, a (0 <= a <= n); each verification emits its a drafts and
 *              one token of its own, so the steps replay the output. From them (local-engine.ts):
 *              acceptance rate = sum a / sum n, mean accepted length = sum a / steps.
 */

export interface DecodeStep {
  drafted: number[];
  accepted: number;
}

/** What a decoding loop tells about itself. */
export interface DecodeObserver {
  /** A pass of the full path returned (the first one ends the prefill). */
  passed(): void;
  /** A verification's verdict: `drafted` (none in the plain modes), of which the first `accepted` were kept. */
  verified(drafted: number[], accepted: number): void;
}

/** The statistics of a run, as a result reports them. */
export interface DecodeStats {
  prefillMs: number;
  decodeMs: number;
  steps: DecodeStep[];
}

/** An observer that keeps what a result reports. */
export class DecodeRecord implements DecodeObserver {
  private prefillMs: number | undefined;
  private readonly steps: DecodeStep[] = [];

  /**
   * @param t0 when the run started (performance.now())
   * @param drafting whether the mode drafts: the plain modes record no steps (each round is one token of the model's own)
   */
  constructor(
    private readonly t0: number,
    private readonly drafting: boolean,
  ) {}

  passed(): void {
    this.prefillMs ??= performance.now() - this.t0;
  }

  verified(drafted: number[], accepted: number): void {
    if (this.drafting) this.steps.push({ drafted, accepted });
  }

  /** The statistics, at the end of the run (a run that never reached the full path counts it all as prefill). */
  stats(): DecodeStats {
    const now = performance.now();
    const prefillMs = this.prefillMs ?? now - this.t0;
    return { prefillMs, decodeMs: now - this.t0 - prefillMs, steps: this.steps };
  }
}
