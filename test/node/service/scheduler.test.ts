/** The scheduler with a fake engine: bounded admission, round-robin fairness between tenants, cancellation. */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { Engine } from "../../../gpu-service/src/engine/engine.js";
import type { EngineEvent } from "../../../gpu-service/src/engine/events.js";
import type { GenerateParams } from "../../../gpu-service/src/engine/plan.js";
import { Scheduler } from "../../../gpu-service/src/server/scheduler.js";
import { taggedParams } from "../../support/tagged-params.js";

/** A test double: each request "runs" until the test releases it. */
class FakeEngine implements Engine {
  readonly info = { name: "fake", visualTokens: 4, numLayers: 4, contextLength: 64 };
  readonly started: string[] = [];
  private releases: (() => void)[] = [];
  generate(params: GenerateParams, onEvent: (e: EngineEvent) => void, signal?: AbortSignal): Promise<void> {
    this.started.push(params.prompt ?? "");
    return new Promise((resolve, reject) => {
      signal?.addEventListener("abort", () => reject(Object.assign(new Error("aborted"), { name: "AbortError" })));
      this.releases.push(() => {
        onEvent({ type: "delta", text: "x", tokenIds: [1], acceptedDraftTokens: 0 });
        resolve();
      });
    });
  }
  finishOne(): void {
    this.releases.shift()?.();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("Scheduler", () => {
  it("serves tenants round-robin: a burst does not starve a single request", async () => {
    const engine = new FakeEngine();
    const s = new Scheduler([engine], 100);
    const all: Promise<number>[] = [];
    for (let i = 0; i < 5; i++) all.push(s.run("busy", taggedParams(`busy-${i}`), () => {}));
    all.push(s.run("quiet", taggedParams("quiet-0"), () => {}));
    for (let i = 0; i < 6; i++) {
      await tick();
      engine.finishOne();
    }
    await Promise.all(all);
    // busy-0 was already running when quiet arrived; quiet goes next, not after the whole burst
    expect(engine.started.slice(0, 3)).toEqual(["busy-0", "quiet-0", "busy-1"]);
  });

  it("answers RESOURCE_EXHAUSTED past the queue bound", async () => {
    const engine = new FakeEngine();
    const s = new Scheduler([engine], 2);
    const running = s.run("a", taggedParams("r"), () => {});
    const waiting = [s.run("a", taggedParams("w1"), () => {}), s.run("b", taggedParams("w2"), () => {})];
    await expect(s.run("c", taggedParams("over"), () => {})).rejects.toSatisfy(
      (e: unknown) => e instanceof ConnectError && e.code === Code.ResourceExhausted,
    );
    expect(s.stats()).toEqual({ waiting: 2, running: 1 });
    for (let i = 0; i < 3; i++) {
      engine.finishOne();
      await tick();
    }
    await Promise.all([running, ...waiting]);
  });

  it("drops a request cancelled while waiting, and frees the worker of one cancelled while running", async () => {
    const engine = new FakeEngine();
    const s = new Scheduler([engine], 10);
    const c1 = new AbortController();
    const c2 = new AbortController();
    const running = s.run("a", taggedParams("running"), () => {}, c1.signal);
    const queued = s.run("b", taggedParams("queued"), () => {}, c2.signal);
    c2.abort();
    await expect(queued).rejects.toBeDefined();
    expect(s.stats().waiting).toBe(0);
    c1.abort();
    await expect(running).rejects.toMatchObject({ name: "AbortError" });
    const next = s.run("c", taggedParams("next"), () => {});
    await tick();
    expect(engine.started).toEqual(["running", "next"]);
    engine.finishOne();
    engine.finishOne();
    await next;
  });
});
