/**
 * The supervisor with fake engines and vitest's fake clock: a worker that dies
 * leaves the scheduler at once and is replaced after the back-off; a crash
 * loop waits 500 ms, 1 s, 2 s, ... up to 30 s between restarts, a replacement
 * that fails to load counts as a crash, and a worker that ran past the stable
 * period starts the count again. (worker-restart.test.ts shows a real worker
 * dying in the real service.)
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { EngineEvent } from "../../../gpu-service/src/engine/events.js";
import type { GenerateParams } from "../../../gpu-service/src/engine/plan.js";
import { Scheduler } from "../../../gpu-service/src/server/scheduler.js";
import {
  DEFAULT_BACKOFF,
  restartDelay,
  type SupervisedEngine,
  Supervisor,
} from "../../../gpu-service/src/server/supervisor.js";

/** A test double: answers at once; `die()` ends it as a worker thread's exit would. */
class FakeEngine implements SupervisedEngine {
  static made = 0;
  readonly info = { name: "fake", visualTokens: 4, numLayers: 4, contextLength: 64 };
  readonly id = ++FakeEngine.made;
  served = 0;
  private listeners: ((code: number) => void)[] = [];
  generate(_p: GenerateParams, onEvent: (e: EngineEvent) => void): Promise<void> {
    this.served++;
    onEvent({ type: "delta", text: "x", tokenIds: [1], acceptedDraftTokens: 0 });
    return Promise.resolve();
  }
  onExit(listener: (code: number) => void): void {
    this.listeners.push(listener);
  }
  die(code = 1): void {
    for (const l of this.listeners) l(code);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const params: GenerateParams = {
  image: new Uint8Array(),
  prompt: "p",
  maxTokens: 1,
  temperature: 0,
  topP: 1,
  stop: [],
  plan: { mode: "base", visualTokens: 1, retainBudget: null, keptVisualTokens: 1, scoreSource: null, draft: null },
};

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function supervised(opts: { failLoads?: number } = {}) {
  const engines: FakeEngine[] = [];
  let failLoads = opts.failLoads ?? 0;
  let starts = 0;
  const live: number[] = [];
  let restarts = 0;
  const scheduler = new Scheduler([], 8);
  const supervisor = new Supervisor({
    name: "fake",
    workers: 1,
    scheduler,
    start: async () => {
      starts++;
      if (starts > 1 && failLoads > 0) {
        failLoads--;
        throw new Error("cannot load");
      }
      const e = new FakeEngine();
      engines.push(e);
      return e;
    },
    onLive: (n) => live.push(n),
    onRestart: () => restarts++,
  });
  return { supervisor, scheduler, engines, live, starts: () => starts, restarts: () => restarts };
}

describe("restartDelay", () => {
  it("doubles from 500 ms and stops at 30 s", () => {
    const delays = Array.from({ length: 9 }, (_, i) => restartDelay(i + 1, DEFAULT_BACKOFF));
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
});

describe("Supervisor", () => {
  it("takes a dead worker out of the scheduler at once and puts a new one in after the back-off", async () => {
    const s = supervised();
    await s.supervisor.start();
    expect(s.live).toEqual([1]);
    s.engines[0].die();
    expect(s.live).toEqual([1, 0]);
    // no worker: a request is refused UNAVAILABLE at once, not queued for the restart
    const refused = await s.scheduler.run("t", params, () => {}).catch((e) => ConnectError.from(e));
    expect(refused).toMatchObject({ code: Code.Unavailable });
    expect(s.engines[0].served).toBe(0);
    await vi.advanceTimersByTimeAsync(499);
    expect(s.starts()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.starts()).toBe(2);
    expect(s.restarts()).toBe(1);
    expect(s.live).toEqual([1, 0, 1]);
    await s.scheduler.run("t", params, () => {});
    expect([s.engines[0].served, s.engines[1].served]).toEqual([0, 1]);
  });

  it("backs off a crash loop exponentially, counts failed loads as crashes, and resets after a stable run", async () => {
    const s = supervised({ failLoads: 2 });
    await s.supervisor.start();
    const waits: number[] = [];
    /** Advances the clock until the next start, and records how long that took. */
    const untilNextStart = async () => {
      const before = s.starts();
      let waited = 0;
      while (s.starts() === before) {
        await vi.advanceTimersByTimeAsync(100);
        waited += 100;
      }
      waits.push(waited);
    };
    s.engines[0].die(); // crash 1
    await untilNextStart(); // fails to load: crash 2
    await untilNextStart(); // fails to load: crash 3
    await untilNextStart(); // loads
    s.engines[1].die(); // dies at once: crash 4
    await untilNextStart();
    expect(waits).toEqual([500, 1000, 2000, 4000]);
    expect(s.restarts()).toBe(4);
    // a worker that runs past the stable period starts the count again
    await vi.advanceTimersByTimeAsync(DEFAULT_BACKOFF.stableMs);
    s.engines[2].die();
    await untilNextStart();
    expect(waits.at(-1)).toBe(500);
    expect(s.live.at(-1)).toBe(1);
  });

  it("does not restart once stopped", async () => {
    const s = supervised();
    await s.supervisor.start();
    await s.supervisor.stop();
    s.engines[0].die();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.starts()).toBe(1);
  });
});
