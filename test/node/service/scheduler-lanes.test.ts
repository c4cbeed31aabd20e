/**
 * The scheduler with workers that batch (`info.maxBatch` above 1): a worker runs that many
 * requests at once, requests spread over workers by free lanes, fairness between tenants holds
 * lane by lane, and a removed worker gives up every lane.
 */
import { describe, expect, it } from "vitest";
import type { Engine } from "../../../gpu-service/src/engine/engine.js";
import type { GenerateParams } from "../../../gpu-service/src/engine/plan.js";
import { Scheduler } from "../../../gpu-service/src/server/scheduler.js";
import { taggedParams } from "../../support/tagged-params.js";

/** Requests stay running until the test ends them, oldest first. */
function batchingEngine(name: string, maxBatch: number) {
  const running: { tag: string; end: () => void }[] = [];
  const started: string[] = [];
  const engine: Engine = {
    info: { name, visualTokens: 4, numLayers: 4, contextLength: 64, maxBatch },
    generate: (params: GenerateParams) =>
      new Promise<void>((resolve) => {
        started.push(params.prompt ?? "");
        running.push({ tag: params.prompt ?? "", end: resolve });
      }),
    close: () => Promise.resolve(),
  };
  return { engine, running, started, endOne: () => running.shift()?.end() };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("Scheduler with batching workers", () => {
  it("runs up to maxBatch requests on one worker at once, the rest wait in fair order", async () => {
    const w = batchingEngine("a", 3);
    const s = new Scheduler([w.engine], 100);
    const all = [0, 1, 2, 3, 4].map((i) => s.run("busy", taggedParams(`busy-${i}`), () => {}));
    all.push(s.run("quiet", taggedParams("quiet-0"), () => {}));
    await tick();
    expect(w.running.map((r) => r.tag)).toEqual(["busy-0", "busy-1", "busy-2"]);
    expect(s.stats()).toEqual({ waiting: 3, running: 3 });
    w.endOne();
    await tick();
    // the freed lane goes to the quiet tenant first, not to the rest of the burst
    expect(w.running.map((r) => r.tag)).toEqual(["busy-1", "busy-2", "quiet-0"]);
    while (w.running.length > 0) {
      w.endOne();
      await tick();
    }
    await Promise.all(all);
    expect(w.started).toEqual(["busy-0", "busy-1", "busy-2", "quiet-0", "busy-3", "busy-4"]);
  });

  it("spreads requests over workers by free lanes, and a removed worker takes none again", async () => {
    const [a, b] = [batchingEngine("a", 2), batchingEngine("b", 2)];
    const s = new Scheduler([a.engine, b.engine], 100);
    const first = [0, 1, 2].map((i) => s.run("t", taggedParams(`r${i}`), () => {}));
    await tick();
    expect([a.running.length, b.running.length].sort()).toEqual([1, 2]);
    s.remove(a.engine);
    const later = [3, 4].map((i) => s.run("t", taggedParams(`r${i}`), () => {}));
    await tick();
    // b has one free lane: one of the two runs there, the other waits for b
    expect(b.running.length).toBe(2);
    expect(s.stats().waiting).toBe(1);
    while (a.running.length + b.running.length > 0) {
      a.endOne();
      b.endOne();
      await tick();
    }
    await Promise.all([...first, ...later]);
    expect(a.started.length + b.started.length).toBe(5);
    expect(a.started.every((t) => ["r0", "r1", "r2"].includes(t))).toBe(true);
  });
});
