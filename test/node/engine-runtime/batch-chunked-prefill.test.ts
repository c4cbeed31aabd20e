/**
 * A prompt longer than a round's prefill rows (batch/batch-loop.ts, batch/prefill.ts) is prefilled
 * over several rounds, one segment run between two, its rows in chunks where no pruner reads the
 * run's attention, while the running sequences go on decoding. On the demo model with a round's
 * prefill cut to 48 rows, every prompt (about 160 rows) is such a long one:
 *   - requests of every mode, budget and length sent together each end with the tokens they get
 *     alone through the twig decoder (greedy; near-ties counted as in the acceptance test), while
 *     rounds ran between the chunks of each prefill (sequences left and joined meanwhile: the
 *     slots of the prompt being prefilled move down behind the running ones);
 *   - a joiner cancelled while its prompt is being prefilled ends with an abort and gives its slots
 *     back, the others' outputs unchanged;
 *   - under a KV budget too small for everyone, a prefill in progress stops for the room when its
 *     joiner is the latest arrival (rather than preempting a running sequence) and starts again
 *     later, and the outputs are the same.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BatchLoop, type BatchResult } from "../../../gpu-service/src/engine/batch/batch-loop.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import type { TwigGenerateOptions } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { compareWithAlone, type DemoDecoder, demoRequest, loadDemoDecoder } from "../../support/demo-batch.js";

// the limit only catches a hang on a shared 2-core machine; it is not a speed requirement
vi.setConfig({ testTimeout: 900_000, hookTimeout: 600_000 });

const NEAR_TIE = 1e-4;
const CHUNK = 48;
const MODES: Mode[] = ["twig", "ttp-only", "base", "ssd-only", "fastv", "random", "visionzip"];
const QUESTIONS = ["describe the picture .", "what colour is the circle ?", "how many objects are there ?"];

let demo: DemoDecoder;

beforeAll(async () => {
  demo = await loadDemoDecoder();
});
afterAll(async () => {
  await demo?.release();
});

const loop = (kvBudgetBytes?: number) =>
  BatchLoop.create(demo.decoder, {
    maxBatch: 6,
    recordMargins: true,
    draftCap: Number.POSITIVE_INFINITY,
    prefillRowsPerRound: CHUNK,
    kvBudgetBytes,
  });

function request(i: number, maxTokens = 16 + ((i * 11) % 33)): Promise<TwigGenerateOptions> {
  return demoRequest(demo, {
    picture: 70 + (i % 23),
    question: QUESTIONS[Math.floor(i / 7) % QUESTIONS.length],
    mode: MODES[i % MODES.length],
    retainBudget: [16, 32, 48][i % 3],
    maxTokens,
  });
}

async function aloneOf(requests: readonly TwigGenerateOptions[]): Promise<number[][]> {
  const out: number[][] = [];
  for (const r of requests) out.push((await demo.decoder.generate(r)).outputIds);
  return out;
}

describe("a long prompt's prefill over several rounds (demo model, 48 prompt rows a round)", () => {
  it("gives every request the tokens it gets alone while the others decode between its chunks", async () => {
    const requests = await Promise.all(Array.from({ length: 28 }, (_, i) => request(i)));
    expect(Math.min(...requests.map((r) => r.inputIds.length + r.plan.visualTokens))).toBeGreaterThan(2 * CHUNK);
    const alone = await aloneOf(requests);
    const batch = await loop();
    try {
      const batched: BatchResult[] = await Promise.all(requests.map((r) => batch.generate(r)));
      expect(batch.longPrefills).toBe(requests.length);
      expect(batch.droppedPrefills).toBe(0);
      // rounds ran while prompts were being prefilled (lower, mid and top in chunks)
      expect(batch.roundsDuringPrefill).toBeGreaterThan(requests.length / 2);
      expect(batch.peakBatch).toBeGreaterThan(2);
      const { equal, nearTies, mismatches } = compareWithAlone(batched, alone, (i) => requests[i].plan.mode, NEAR_TIE);
      console.log(
        `chunked prefill: ${requests.length} requests, ${equal} equal token for token, ${nearTies.length} differ at a near-tie${nearTies.map((l) => `\n  ${l}`).join("")}`,
      );
      expect(mismatches).toEqual([]);
      expect(equal + nearTies.length).toBe(requests.length);
      expect(batch.size).toBe(0);
      expect(batch.kvBytes).toBeLessThan(1024 ** 2); // the caches gave their memory back
    } finally {
      await batch.release();
    }
  });

  it("a joiner cancelled during its prefill ends with an abort; the others' outputs are unchanged", async () => {
    const requests = await Promise.all([0, 1, 2].map((i) => request(i, 30)));
    const alone = await aloneOf(requests);
    const batch = await loop();
    try {
      const ctrl = new AbortController();
      const victim = { ...(await request(3, 30)), signal: ctrl.signal };
      // the first request runs; the victim (second in line) is being prefilled: cancel it then
      let cancelledWhile = -1;
      batch.onStats = (s) => {
        if (!ctrl.signal.aborted && batch.prefilling === 1 && s.running === 1) {
          cancelledWhile = batch.longPrefills;
          ctrl.abort();
        }
      };
      const results = await Promise.allSettled([
        batch.generate(requests[0]),
        batch.generate(victim),
        batch.generate(requests[1]),
        batch.generate(requests[2]),
      ]);
      expect(cancelledWhile).toBe(2); // during the second prompt's prefill: the victim's
      expect(results[1].status).toBe("rejected");
      expect((results[1] as PromiseRejectedResult).reason.name).toBe("AbortError");
      expect(batch.droppedPrefills).toBe(1);
      const others = [results[0], results[2], results[3]].map((r) => {
        expect(r.status).toBe("fulfilled");
        return (r as PromiseFulfilledResult<BatchResult>).value;
      });
      const { mismatches, equal, nearTies } = compareWithAlone(others, alone, (i) => requests[i].plan.mode, NEAR_TIE);
      expect(mismatches).toEqual([]);
      expect(equal + nearTies.length).toBe(3);
      expect(batch.size).toBe(0);
    } finally {
      await batch.release();
    }
  });

  it("under a tight KV budget a prefill in progress gives way to the earlier arrivals and the tokens are the same", async () => {
    // three long base answers, 16 prompt rows a round (a prefill spans about a dozen rounds), and a
    // budget that admits the second prompt beside the first but not the first's growth meanwhile
    const BUDGET = 8 * 1024 ** 2;
    const requests = await Promise.all(
      [0, 1, 2].map((i) =>
        demoRequest(demo, { picture: 80 + i, question: "describe the picture .", mode: "base", maxTokens: 100 }),
      ),
    );
    const alone = await aloneOf(requests);
    const batch = await BatchLoop.create(demo.decoder, {
      maxBatch: 6,
      recordMargins: true,
      prefillRowsPerRound: 16,
      kvBudgetBytes: BUDGET,
    });
    try {
      let over = 0;
      batch.onStats = (s) => {
        if (s.running + batch.prefilling > 1 && s.kvBytes > BUDGET) over++;
      };
      const batched = await Promise.all(requests.map((r) => batch.generate(r)));
      expect(over).toBe(0);
      expect(batch.droppedPrefills).toBeGreaterThan(0);
      expect(batch.preemptions).toBe(0); // the prompt being prefilled gave way, not the earlier running one
      const { mismatches, equal, nearTies } = compareWithAlone(batched, alone, () => "base", NEAR_TIE);
      console.log(
        `chunked prefill under ${BUDGET} bytes: ${batch.droppedPrefills} prefills stopped for room, ${equal} equal, ${nearTies.length} near-ties`,
      );
      expect(mismatches).toEqual([]);
      expect(equal + nearTies.length).toBe(requests.length);
    } finally {
      await batch.release();
    }
  });
});
