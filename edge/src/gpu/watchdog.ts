/**
 * A timer that aborts a GPU call when the shard keeps silent too long: armed
 * before each wait (for the first event, then for each next one) and disarmed
 * when the event arrives. When it fires it aborts its signal and remembers why,
 * so the caller can tell a silent shard from a client that went away.
 */

export type Silence = "connect" | "stall";

export class Watchdog {
  private readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Why it fired, once it has. */
  fired: { silence: Silence; ms: number } | undefined;

  /** Aborted when the watchdog fires. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Fires after `ms` of silence unless disarmed (or armed again) first. */
  arm(ms: number, silence: Silence): void {
    this.disarm();
    this.timer = setTimeout(() => {
      this.fired = { silence, ms };
      this.controller.abort(new Error(`the GPU service was silent for ${ms} ms (${silence})`));
    }, ms);
  }

  disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
