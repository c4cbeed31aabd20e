/**
 * Continuous batching on a model without a twig (batch/batch-loop.ts with mid alone, every layer):
 * the demo model's weights with no `twig/` beside them, as a user's plain LLaVA checkpoint comes.
 * Requests of several pictures, questions and lengths, greedy and sampled with a seed, sent
 * together to an engine that batches, each give the tokens the same request gives alone on an
 * engine that decodes one at a time (plain decoding, runtime's generateBase); they did decode
 * together; a request cancelled mid-batch leaves the others' outputs unchanged; a KV budget too
 * small for all of them at once makes the batch preempt and still gives the same tokens; a mode
 * that needs a twig is refused.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { EngineEvent } from "../../../gpu-service/src/engine/events.js";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";
import type { RequestInput } from "../../../gpu-service/src/engine/plan.js";
import { repoRoot } from "../../support/gpu-service.js";

// the limit only catches a hang on a shared 2-core machine; it is not a speed requirement
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const DEMO = join(repoRoot, "models", "demo");
const picture = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "test", `${String(i).padStart(4, "0")}.png`));
const QUESTIONS = ["describe the picture .", "what colour is the circle ?", "how many objects are there ?"];

/** The i-th request: picture, question and length vary together; every third one sampled with a seed. */
function request(i: number): RequestInput {
  const sampled = i % 3 === 2;
  return {
    image: picture(i % 13),
    messages: [{ role: "user", content: QUESTIONS[i % QUESTIONS.length] }],
    mode: "base",
    maxTokens: 4 + ((i * 7) % 29),
    temperature: sampled ? 0.8 : 0,
    topP: sampled ? 0.9 : 1,
    seed: sampled ? 100 + i : undefined,
    stop: [],
  };
}

interface Outcome {
  tokens: number[];
  finishReason: string;
}

async function run(engine: LocalEngine, request: RequestInput, signal?: AbortSignal, onDelta?: () => void) {
  const tokens: number[] = [];
  let finishReason = "";
  await engine.generate(
    await engine.plan(request),
    (e: EngineEvent) => {
      if (e.type === "delta") {
        tokens.push(...e.tokenIds);
        onDelta?.();
      }
      if (e.type === "finished") finishReason = e.finishReason;
    },
    signal,
  );
  return { tokens, finishReason } satisfies Outcome;
}

const bare = mkdtempSync(join(tmpdir(), "twig-bare-demo-"));
let alone: LocalEngine;
let batched: LocalEngine;
const want = new Map<number, Outcome>();
const outcomeOf = async (i: number) => {
  let w = want.get(i);
  if (!w) {
    w = await run(alone, request(i));
    want.set(i, w);
  }
  return w;
};

beforeAll(async () => {
  // the demo model's files without its twig
  for (const f of readdirSync(DEMO)) if (f !== "twig") symlinkSync(join(DEMO, f), join(bare, f));
  [alone, batched] = await Promise.all([
    LocalEngine.load(bare, { threads: 1 }),
    LocalEngine.load(bare, { threads: 1, maxBatch: 8, releaseWeights: true }),
  ]);
});
afterAll(async () => {
  await Promise.all([alone?.close(), batched?.close()]);
  rmSync(bare, { recursive: true, force: true });
});

describe("continuous batching on a model without a twig", () => {
  it("the engine has no twig and batches", () => {
    expect(batched.info.twig).toBeUndefined();
    expect(batched.info.maxBatch).toBe(8);
    expect(alone.info.maxBatch).toBe(1);
  });

  it("gives every request of a batch the tokens it gets alone", async () => {
    const ids = Array.from({ length: 24 }, (_, i) => i);
    const expected: Outcome[] = [];
    for (const i of ids) expected.push(await outcomeOf(i));
    const got = await Promise.all(ids.map((i) => run(batched, request(i))));
    // they decoded together, up to the cap: not always all 8 at once, since joiners come in a few a round
    // (a round's prefill rows) and a two-token answer can end before the last of a wave has joined
    expect(batched.batch?.peakBatch).toBeGreaterThanOrEqual(4);
    expect(batched.batch?.peakBatch).toBeLessThanOrEqual(8);
    got.forEach((g, i) => {
      expect({ i, ...g }).toEqual({ i, ...expected[i] });
      expect(g.tokens.length).toBeGreaterThan(0);
    });
    // the batch gave its memory back
    expect(batched.batch?.size).toBe(0);
    expect(batched.batch?.kvBytes).toBeLessThan(1024 ** 2);
  });

  it("a request cancelled mid-batch ends with an abort, and the others' outputs are unchanged", async () => {
    const ids = [0, 1, 3, 4, 6];
    const expected: Outcome[] = [];
    for (const i of ids) expected.push(await outcomeOf(i));
    const ctrl = new AbortController();
    let deltas = 0;
    const victim: RequestInput = { ...request(9), maxTokens: 60 }; // a description: long

    const results = await Promise.allSettled([
      ...ids.map((i) => run(batched, request(i))),
      run(batched, victim, ctrl.signal, () => {
        if (++deltas === 1) ctrl.abort();
      }),
    ]);
    const last = results[ids.length];
    expect(last.status).toBe("rejected");
    expect((last as PromiseRejectedResult).reason.name).toBe("AbortError");
    expect(deltas).toBeLessThan(60);
    results.slice(0, ids.length).forEach((r, i) => {
      expect(r.status).toBe("fulfilled");
      expect((r as PromiseFulfilledResult<Outcome>).value).toEqual(expected[i]);
    });
  });

  it("under a KV budget too small for all at once it preempts, and the tokens are the same", async () => {
    // a position of the demo model's KV is 32 layers x 96 x 2 x 4 bytes = 24 KiB: a prompt (about 160
    // positions) takes about 4 MB, in chunks of 16 positions; 8.5 MB holds two slots of 176 positions
    // and not of 192, so two run at a time and one is preempted as they grow
    const tight = await LocalEngine.load(bare, { threads: 1, maxBatch: 8, kvBudgetBytes: 8.5 * 1024 ** 2 });
    try {
      // descriptions (long answers), greedy
      const params = [0, 3, 6, 9, 12, 15].map((i) => ({ ...request(i), maxTokens: 40 }));
      const expected: Outcome[] = [];
      for (const p of params) expected.push(await run(alone, p));
      const got = await Promise.all(params.map((p) => run(tight, p)));
      got.forEach((g, i) => {
        expect({ i, ...g }).toEqual({ i, ...expected[i] });
      });
      expect(tight.batch?.peakBatch).toBeGreaterThan(1);
      expect(tight.batch?.preemptions).toBeGreaterThan(0);
    } finally {
      await tight.close();
    }
  });

  it("refuses a mode that needs a twig", async () => {
    await expect(batched.plan({ ...request(0), mode: "ttp-only" })).rejects.toThrow(/needs a twig/);
  });
});
