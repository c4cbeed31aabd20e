/**
 * The batch's KV budget on the demo model (batch/batch-loop.ts, batch/kv-room.ts): a budget that
 * holds the prompts of a few sequences but not their answers, and 24 long requests of mixed
 * modes reaching the loop in a known order. While more than one sequence runs the caches never
 * hold more than the budget; the loop holds requests back for memory (not for its batch limit)
 * and admits them in arrival order as memory frees; rounds that would pass the budget preempt
 * the latest arrival, which is refilled later and ends with the tokens it gets alone (greedy,
 * near-ties counted as in the acceptance test); and with nothing left to run the caches are back
 * to their empty size.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BatchLoop, type BatchResult } from "../../../gpu-service/src/engine/batch/batch-loop.js";
import type { BatchStats } from "../../../gpu-service/src/engine/engine.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import type { TwigGenerateOptions } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { compareWithAlone, type DemoDecoder, demoRequest, loadDemoDecoder } from "../../support/demo-batch.js";

// the limit only catches a hang on a shared 2-core machine; it is not a speed requirement
vi.setConfig({ testTimeout: 900_000, hookTimeout: 600_000 });

const BUDGET = 24 * 1024 ** 2;
const MAX_BATCH = 16;
const MODES: Mode[] = ["twig", "ttp-only", "ssd-only", "twig", "fastv", "base"];

let demo: DemoDecoder;
let batch: BatchLoop;

beforeAll(async () => {
  demo = await loadDemoDecoder();
  batch = await BatchLoop.create(demo.decoder, {
    maxBatch: MAX_BATCH,
    kvBudgetBytes: BUDGET,
    recordMargins: true,
    draftCap: Number.POSITIVE_INFINITY,
  });
});
afterAll(async () => {
  await batch?.release();
  await demo?.release();
});

describe("the batch's KV budget (demo model)", () => {
  it("holds while more than one runs, admits in arrival order, preempts the latest and refills it unchanged", async () => {
    const requests: TwigGenerateOptions[] = [];
    for (let i = 0; i < 24; i++)
      requests.push(
        await demoRequest(demo, {
          picture: 40 + i,
          question: i % 4 === 3 ? "what colour is the circle ?" : "describe the picture .",
          mode: MODES[i % MODES.length],
          retainBudget: [16, 32][i % 2],
          maxTokens: 64,
        }),
      );
    const alone: number[][] = [];
    for (const r of requests) alone.push((await demo.decoder.generate(r)).outputIds);

    const reports: BatchStats[] = [];
    batch.onStats = (s) => reports.push(s);
    // when each started: the reports so far (one after each admission), so those admitted together share it
    const startedAt: number[] = [];
    const idle = batch.kvBytes;
    const batched: BatchResult[] = await Promise.all(
      requests.map((r, i) =>
        batch.generate({
          ...r,
          onStarted: () => {
            startedAt[i] = reports.length;
          },
        }),
      ),
    );

    const { equal, nearTies, mismatches } = compareWithAlone(batched, alone, (i) => requests[i].plan.mode);
    const crowded = reports.filter((s) => s.running > 1);
    const peakKv = Math.max(...crowded.map((s) => s.kvBytes));
    const heldBack = reports.filter((s) => s.waiting > 0 && s.running < MAX_BATCH && s.running > 0);
    console.log(
      `KV budget ${BUDGET} bytes: batch of up to ${batch.peakBatch} (limit ${MAX_BATCH}), KV up to ${peakKv} bytes with more than one running, ` +
        `${heldBack.length} of ${reports.length} reports with requests held back for memory, ${batch.preemptions} preemptions; ` +
        `${equal} of ${requests.length} equal to their lone run, ${nearTies.length} differ at a near-tie${nearTies.map((l) => `\n  ${l}`).join("")}`,
    );
    expect(mismatches).toEqual([]);
    expect(equal + nearTies.length).toBe(requests.length);
    // admitted in arrival order: none before one that arrived earlier (those admitted together are prefilled together)
    expect(startedAt.length).toBe(requests.length);
    startedAt.forEach((at, i) => {
      expect(at, `request ${i}`).toBeGreaterThanOrEqual(startedAt[i - 1] ?? 0);
    });
    for (const s of crowded) expect(s.kvBytes).toBeLessThanOrEqual(BUDGET);
    expect(batch.peakBatch).toBeGreaterThan(1);
    expect(batch.peakBatch).toBeLessThan(MAX_BATCH); // memory, not the count, bounded the batch
    expect(heldBack.length).toBeGreaterThan(0);
    expect(batch.preemptions).toBeGreaterThan(0);
    expect(reports.at(-1)).toMatchObject({ running: 0, waiting: 0, kvBytes: idle });
  });
});
