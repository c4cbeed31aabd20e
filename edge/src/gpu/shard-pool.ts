/**
 * Which replica of a model takes the next request, as this isolate sees its
 * GPU services ("shards"):
 *
 * - Least outstanding requests first. Each isolate counts the calls it has
 *   open on each shard (from the first attempt to the end of the stream);
 *   sending the next request to the shard with the fewest is "join the
 *   shortest queue" on local knowledge. A deployed edge runs many isolates,
 *   each with its own counts, so the balance is approximate; a shard whose
 *   queue is full answers RESOURCE_EXHAUSTED and the request moves on.
 *   Ties rotate, so equal shards share the load.
 * - A circuit breaker per shard. A shard that fails (it cannot be reached, is
 *   draining, times out, or dies mid-stream) is open: not tried for the
 *   cool-down while another shard is available. When that time is up it is
 *   half-open: exactly one request (the trial) goes to it, first, so that a
 *   recovered shard is seen at once; a trial that fails costs only a failover
 *   before the first token. Success closes the breaker; failure opens it
 *   again for twice as long, up to the longest cool-down. If every shard is
 *   open they are all tried, least recently failed first: the edge never
 *   refuses on its own guess.
 *
 *   closed --failure--> open --cool-down over--> half-open --trial ok--> closed
 *                        ^                           |
 *                        +--------trial fails--------+   (the cool-down doubles)
 *
 * A trial whose request never reports back (the client went away first) gives
 * its turn up after one cool-down, so a shard is never left open for good.
 *
 * @example
 *   const order = shardPool.order(urls);     // try in this order
 *   const end = shardPool.begin(order[0]);   // counts as outstanding until end()
 *   shardPool.succeeded(order[0]);           // its first event arrived
 *   end();                                   // the stream is over
 */

export interface ShardPoolOptions {
  /** How long a failed shard is left alone before one trial request goes to it. */
  openMs: number;
  /** The longest it is left alone after repeated failed trials. */
  maxOpenMs: number;
}

export const DEFAULT_POOL_OPTIONS: ShardPoolOptions = { openMs: 10_000, maxOpenMs: 60_000 };

interface ShardState {
  outstanding: number;
  /** While open: when the trial may go. 0 when closed. */
  openUntil: number;
  /** The cool-down the next failure starts. */
  nextOpenMs: number;
  /** A trial request holds the half-open shard until then (0: none in flight). */
  trialUntil: number;
  /** When the shard last failed (to order shards that are all open). */
  failedAt: number;
  /** Counters since this isolate started (for the admin API). */
  attempts: number;
  failures: number;
}

export type BreakerState = "closed" | "open" | "half-open";

/** What the admin API shows of a shard. */
export interface ShardView {
  url: string;
  breaker: BreakerState;
  /** Calls this isolate has open on the shard. */
  outstanding: number;
  /** While open: milliseconds until its trial request may go. */
  retryInMs?: number;
  /** Calls this isolate started on it, and how many of them failed on the shard's side. */
  attempts: number;
  failures: number;
}

export class ShardPool {
  private readonly shards = new Map<string, ShardState>();
  private turn = 0;

  constructor(
    private options: ShardPoolOptions = DEFAULT_POOL_OPTIONS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Sets the cool-downs (from the edge's settings) for failures from now on. */
  configure(options: ShardPoolOptions): void {
    if (options.openMs === this.options.openMs && options.maxOpenMs === this.options.maxOpenMs) return;
    this.options = options;
    for (const s of this.shards.values())
      if (s.openUntil === 0) s.nextOpenMs = options.openMs;
      else s.nextOpenMs = Math.min(s.nextOpenMs, options.maxOpenMs);
  }

  private state(url: string): ShardState {
    let s = this.shards.get(url);
    if (!s) {
      s = {
        outstanding: 0,
        openUntil: 0,
        nextOpenMs: this.options.openMs,
        trialUntil: 0,
        failedAt: 0,
        attempts: 0,
        failures: 0,
      };
      this.shards.set(url, s);
    }
    return s;
  }

  /** The breaker of one shard, now ("open" while its trial request is in flight). */
  breaker(url: string): BreakerState {
    const s = this.state(url);
    if (s.openUntil === 0) return "closed";
    const now = this.now();
    return s.openUntil > now || s.trialUntil > now ? "open" : "half-open";
  }

  /** Requests this isolate has open on a shard. */
  outstanding(url: string): number {
    return this.state(url).outstanding;
  }

  /**
   * The order in which to try `urls` for one request: a half-open shard's
   * trial first (one request at a time), then closed shards by fewest
   * outstanding requests (ties rotated), then open shards, least recently
   * failed first. Listing a half-open shard first books its trial.
   */
  order(urls: readonly string[]): string[] {
    const start = urls.length > 0 ? this.turn++ % urls.length : 0;
    const rotated = [...urls.slice(start), ...urls.slice(0, start)];
    const trial = rotated.find((u) => this.breaker(u) === "half-open");
    if (trial) this.state(trial).trialUntil = this.now() + this.options.openMs;
    const closed = rotated
      .map((u, i) => ({ u, i }))
      .filter(({ u }) => this.breaker(u) === "closed")
      .sort((a, b) => this.state(a.u).outstanding - this.state(b.u).outstanding || a.i - b.i)
      .map(({ u }) => u);
    // open shards, and half-open ones beyond the one trial: tried only when nothing else answers
    const open = rotated
      .filter((u) => u !== trial && this.breaker(u) !== "closed")
      .sort((a, b) => this.state(a).failedAt - this.state(b).failedAt);
    return [...(trial ? [trial] : []), ...closed, ...open];
  }

  /** `urls` with closed breakers first, in their given order (for calls that are not requests: no trial is booked). */
  healthyFirst(urls: readonly string[]): string[] {
    return [...urls.filter((u) => this.breaker(u) === "closed"), ...urls.filter((u) => this.breaker(u) !== "closed")];
  }

  /** A call starts on `url`; call the returned function once when it ends, however it ends (more calls do nothing). */
  begin(url: string): () => void {
    const s = this.state(url);
    s.outstanding++;
    s.attempts++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      s.outstanding--;
    };
  }

  /** The shard answered (its first event arrived, or it refused the request on its merits): close its breaker. */
  succeeded(url: string): void {
    const s = this.state(url);
    s.openUntil = 0;
    s.trialUntil = 0;
    s.nextOpenMs = this.options.openMs;
  }

  /**
   * The shard failed (unreachable, draining, timed out, died mid-stream): open its breaker, or
   * after a failed trial open it again for twice as long. Failures while it is open (the streams
   * that were running when it went down) leave the cool-down as it is.
   */
  failed(url: string): void {
    const s = this.state(url);
    const now = this.now();
    s.failures++;
    s.failedAt = now;
    // within its cool-down: the other calls that were running when it went down, not a failed trial
    if (s.openUntil > now) return;
    s.openUntil = now + s.nextOpenMs;
    s.nextOpenMs = Math.min(this.options.maxOpenMs, s.nextOpenMs * 2);
    s.trialUntil = 0;
  }

  /** A trial that neither succeeded nor failed (the client went away): let the next request try. */
  abandoned(url: string): void {
    this.state(url).trialUntil = 0;
  }

  /** How each of `urls` looks from this isolate. */
  view(urls: readonly string[]): ShardView[] {
    return urls.map((url) => {
      const s = this.state(url);
      const breaker = this.breaker(url);
      return {
        url,
        breaker,
        outstanding: s.outstanding,
        ...(breaker === "open" ? { retryInMs: Math.max(0, s.openUntil - this.now()) } : {}),
        attempts: s.attempts,
        failures: s.failures,
      };
    });
  }

  /** Forgets everything (tests). */
  reset(): void {
    this.shards.clear();
    this.turn = 0;
  }
}

/** This isolate's pool: every request of every model goes through it. */
export const shardPool = new ShardPool();
