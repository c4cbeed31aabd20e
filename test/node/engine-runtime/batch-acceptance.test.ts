/**
 * Batching leaves outputs unchanged, at scale: 210 greedy requests on the demo model, across
 * every mode, four budgets, three questions, 30 pictures and lengths of 3 to 24 tokens, run
 * through the batch loop (batches of up to 16, mixed modes and lengths, joining and leaving as
 * they go, prefilled together as they join; every drafter drafting its whole delta), each against the same request run alone
 * through the twig decoder. Each output must
 * equal its lone run token for token, except where the batched run's full-model row that chose
 * the first differing token had its top two logits within a near-tie (relative gap 1e-4), which
 * the test counts and prints.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BatchLoop, type BatchResult } from "../../../gpu-service/src/engine/batch/batch-loop.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import type { TwigGenerateOptions } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { compareWithAlone, type DemoDecoder, demoRequest, loadDemoDecoder } from "../../support/demo-batch.js";

// the limit only catches a hang on a shared 2-core machine; it is not a speed requirement
vi.setConfig({ testTimeout: 1_800_000, hookTimeout: 600_000 });

const REQUESTS = 210;
const NEAR_TIE = 1e-4;
const MODES: Mode[] = ["twig", "ttp-only", "base", "ssd-only", "fastv", "random", "visionzip"];
const QUESTIONS = ["describe the picture .", "what colour is the circle ?", "how many objects are there ?"];
const BUDGETS = [16, 24, 32, 48];

let demo: DemoDecoder;
let batch: BatchLoop;

beforeAll(async () => {
  demo = await loadDemoDecoder();
  // every drafter drafts its whole delta (no adaptive cut): the most drafts verified and rolled back
  // up to eight joiners prefilled together a round (about 160 prompt rows each), so that the batch fills to 16
  batch = await BatchLoop.create(demo.decoder, {
    maxBatch: 16,
    recordMargins: true,
    draftCap: Number.POSITIVE_INFINITY,
    prefillRowsPerRound: 8 * 160,
  });
});
afterAll(async () => {
  await batch?.release();
  await demo?.release();
});

function request(i: number): Promise<TwigGenerateOptions> {
  return demoRequest(demo, {
    picture: i % 30,
    question: QUESTIONS[Math.floor(i / 7) % QUESTIONS.length],
    mode: MODES[i % MODES.length],
    retainBudget: BUDGETS[Math.floor(i / 21) % BUDGETS.length],
    maxTokens: 3 + ((i * 13) % 22),
  });
}

describe("batched outputs equal lone outputs (demo model)", () => {
  it(`${REQUESTS} requests of every mode, budget and length`, async () => {
    const requests = await Promise.all(Array.from({ length: REQUESTS }, (_, i) => request(i)));
    const alone: number[][] = [];
    for (const r of requests) alone.push((await demo.decoder.generate(r)).outputIds);
    const batched: BatchResult[] = await Promise.all(requests.map((r) => batch.generate(r)));
    expect(batch.peakBatch).toBe(16);
    expect(batch.peakJoiners).toBe(8); // joiners were prefilled together

    const { equal, nearTies, mismatches } = compareWithAlone(batched, alone, (i) => requests[i].plan.mode, NEAR_TIE);
    console.log(
      `batch acceptance: ${REQUESTS} requests, ${equal} equal token for token, ${nearTies.length} differ at a near-tie (< ${NEAR_TIE})${nearTies.map((l) => `\n  ${l}`).join("")}`,
    );
    expect(mismatches).toEqual([]);
    expect(equal + nearTies.length).toBe(REQUESTS);
    expect(equal).toBeGreaterThan(REQUESTS * 0.9);
    // drafts were verified in batches and accepted (else the SSD modes would be plain decoding)
    const accepted = batched.reduce((a, b) => a + b.steps.reduce((x, s) => x + s.accepted, 0), 0);
    const rejected = batched.reduce((a, b) => a + b.steps.reduce((x, s) => x + s.drafted.length - s.accepted, 0), 0);
    expect(accepted).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(0);
  });
});
