/**
 * Keeps one model's engine workers up. It starts them and hands them to the
 * model's scheduler; when one dies (its thread exits: a crash, an abort in
 * native code, out of memory), the supervisor takes it out of the scheduler at
 * once, so no request is sent to it again, and starts a replacement after a
 * back-off. The back-off doubles with each crash in a row (a worker that dies
 * within `stableMs` of becoming ready, or a replacement that fails to load)
 * from `baseMs` up to `capMs`, so a crash loop costs little; a worker that ran
 * longer than `stableMs` starts the count again.
 *
 * The request a worker was running fails with UNAVAILABLE (the worker host's
 * EngineWorkerExitedError), which callers retry elsewhere. `onLive` reports the
 * number of workers up, for Health; `onRestart` counts restarts, for metrics.
 */
import type { Engine } from "../engine/engine.js";
import type { Scheduler } from "./scheduler.js";

/** An engine whose worker can die and be closed. */
export interface SupervisedEngine extends Engine {
  onExit(listener: (code: number) => void): void;
  close(): Promise<void>;
}

export interface Backoff {
  /** Delay before the first restart of a crash run (ms). */
  baseMs: number;
  /** Longest delay (ms). */
  capMs: number;
  /** A worker up at least this long before it dies is not part of a crash run (ms). */
  stableMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 500, capMs: 30_000, stableMs: 60_000 };

/** Delay before restart number `crashes` of a run (1, 2, 3, ...): base, doubling, capped. */
export function restartDelay(crashes: number, backoff: Backoff): number {
  return Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.max(0, crashes - 1));
}

export interface SupervisorOptions {
  /** The model's name, for log lines. */
  name: string;
  workers: number;
  /** Starts one worker and warms it up. */
  start: () => Promise<SupervisedEngine>;
  scheduler: Scheduler;
  backoff?: Backoff;
  /** Called with the number of workers up whenever it changes. */
  onLive?: (live: number) => void;
  /** Called when a replacement starts. */
  onRestart?: () => void;
  log?: (level: "info" | "warn" | "error", message: string) => void;
}

interface Slot {
  engine?: SupervisedEngine;
  readyAt: number;
  /** Crashes in a row. */
  crashes: number;
  timer?: NodeJS.Timeout;
}

export class Supervisor {
  private readonly slots: Slot[] = [];
  private stopped = false;
  private up = 0;

  constructor(private readonly opts: SupervisorOptions) {}

  /** Workers up now. */
  get live(): number {
    return this.up;
  }

  /** Starts every worker; rejects (after closing those that started) if one fails to load. */
  async start(): Promise<SupervisedEngine[]> {
    const started = await Promise.allSettled(Array.from({ length: this.opts.workers }, () => this.opts.start()));
    const failed = started.find((r) => r.status === "rejected");
    const engines = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    if (failed) {
      await Promise.all(engines.map((e) => e.close()));
      throw failed.reason;
    }
    for (const engine of engines) {
      const slot: Slot = { readyAt: 0, crashes: 0 };
      this.slots.push(slot);
      this.adopt(slot, engine);
    }
    return engines;
  }

  /** No more restarts; closes the workers. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const slot of this.slots) clearTimeout(slot.timer);
    await Promise.all(this.slots.map((s) => s.engine?.close()));
  }

  private adopt(slot: Slot, engine: SupervisedEngine): void {
    slot.engine = engine;
    slot.readyAt = Date.now();
    engine.onExit((code) => {
      if (slot.engine === engine) this.lost(slot, code);
    });
    this.opts.scheduler.add(engine);
    this.setLive(this.up + 1);
  }

  private lost(slot: Slot, code: number): void {
    if (this.stopped || !slot.engine) return;
    this.opts.scheduler.remove(slot.engine);
    slot.engine = undefined;
    this.setLive(this.up - 1);
    const backoff = this.opts.backoff ?? DEFAULT_BACKOFF;
    slot.crashes = Date.now() - slot.readyAt < backoff.stableMs ? slot.crashes + 1 : 1;
    const delay = restartDelay(slot.crashes, backoff);
    this.opts.log?.(
      "warn",
      `engine worker of model ${this.opts.name} exited (code ${code}), crash ${slot.crashes} in a row; restarting in ${delay} ms`,
    );
    this.later(slot, delay);
  }

  private later(slot: Slot, delay: number): void {
    slot.timer = setTimeout(() => void this.restart(slot), delay);
  }

  private async restart(slot: Slot): Promise<void> {
    if (this.stopped) return;
    this.opts.onRestart?.();
    try {
      const engine = await this.opts.start();
      if (this.stopped) return void (await engine.close());
      this.adopt(slot, engine);
      this.opts.log?.("info", `engine worker of model ${this.opts.name} replaced`);
    } catch (err) {
      slot.crashes++;
      const delay = restartDelay(slot.crashes, this.opts.backoff ?? DEFAULT_BACKOFF);
      this.opts.log?.(
        "error",
        `engine worker of model ${this.opts.name} failed to start (${(err as Error).message}), crash ${slot.crashes} in a row; retrying in ${delay} ms`,
      );
      this.later(slot, delay);
    }
  }

  private setLive(n: number): void {
    this.up = n;
    this.opts.onLive?.(n);
  }
}
