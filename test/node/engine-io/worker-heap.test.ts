/**
 * An engine worker's JS heap start (worker-host.ts, `setEngineHeapStart`) and the garbage
 * collections it reports (`gc()`, what the service's per-worker GC counters read). Two workers on
 * the demo model decoding one request at a time (the path that allocates most: each step's
 * ONNX Runtime outputs include the whole KV so far), each given the same 24 requests one after
 * another: one started with V8's own heap start, one with the service's default; the first runs
 * several full collections, the second fewer than half as many, and both give the same tokens.
 * (How many the first runs moves with timing, since V8 also collects when a heap looks idle: 5 to
 * 14 over 12 requests in five runs beside other test files, hence 24.)
 * The tally counts collections of each kind and the time they paused the thread.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import type { GenerateParams } from "../../../gpu-service/src/engine/plan.js";
import { planRequest } from "../../../gpu-service/src/engine/plan-request.js";
import type { GcTally } from "../../../gpu-service/src/engine/thread-time.js";
import { setEngineHeapStart, WorkerEngine } from "../../../gpu-service/src/engine/worker-host.js";
import { DEFAULT_ENGINE_HEAP_MB } from "../../../gpu-service/src/server/config.js";
import { repoRoot } from "../../support/gpu-service.js";

// the limit only catches a hang on a shared 2-core machine; it is not a speed requirement
vi.setConfig({ testTimeout: 300_000, hookTimeout: 300_000 });

const MODEL = join(repoRoot, "models", "demo");
const REQUESTS = 24;
const picture = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "test", `${String(i).padStart(4, "0")}.png`));
const workers: WorkerEngine[] = [];
afterAll(async () => {
  await Promise.all(workers.map((w) => w.close()));
  setEngineHeapStart(0);
});

/** Starts a worker with the heap start given and runs the requests; their tokens and the collections they took. */
async function measure(heapMb: number): Promise<{ tokens: number[][]; before: GcTally; after: GcTally }> {
  setEngineHeapStart(heapMb);
  const w = await WorkerEngine.start(MODEL, { threads: 1, releaseWeights: true });
  workers.push(w);
  const plans: GenerateParams[] = await Promise.all(
    Array.from({ length: REQUESTS }, (_, i) =>
      planRequest(
        {
          image: picture(i),
          messages: [{ role: "user", content: "describe the picture ." }],
          maxTokens: 48,
          temperature: 0,
          topP: 1,
          stop: [],
          mode: "ttp-only",
        },
        w.info,
      ),
    ),
  );
  const before = (await w.gc()) as GcTally;
  const tokens: number[][] = [];
  for (const p of plans) {
    const ids: number[] = [];
    await w.generate(p, (e) => {
      if (e.type === "delta") ids.push(...e.tokenIds);
    });
    tokens.push(ids);
  }
  await new Promise((r) => setTimeout(r, 200)); // perf_hooks hands gc entries over a little later
  const after = (await w.gc()) as GcTally;
  return { tokens, before, after };
}

describe("an engine worker's heap", () => {
  it("starting larger, the same requests take fewer full collections and give the same tokens", async () => {
    const small = await measure(0);
    const large = await measure(DEFAULT_ENGINE_HEAP_MB);
    const full = (m: typeof small) => m.after.major.count - m.before.major.count;
    console.log(
      `full collections over ${REQUESTS} requests: V8's heap start ${full(small)}, ${DEFAULT_ENGINE_HEAP_MB} MB ${full(large)}`,
    );
    expect(large.tokens).toEqual(small.tokens);
    expect(full(small)).toBeGreaterThanOrEqual(4);
    expect(full(large)).toBeLessThan(full(small) / 2);
    for (const m of [small, large]) {
      expect(m.after.minor.count).toBeGreaterThan(m.before.minor.count);
      expect(m.after.minor.seconds).toBeGreaterThan(m.before.minor.seconds);
      expect(m.after.major.seconds).toBeGreaterThanOrEqual(m.before.major.seconds);
    }
  });

  it("refuses a heap start that is not a whole number of MB", () => {
    expect(() => setEngineHeapStart(-1)).toThrow(RangeError);
    expect(() => setEngineHeapStart(1.5)).toThrow(RangeError);
  });
});
