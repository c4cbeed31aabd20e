/**
 * Lossless speculative sampling on the tiny random model: with temperature > 0
 * the first three generated tokens under SSD (drafts from a shallow twig that
 * disagrees with the full model, so both acceptance and residual resampling
 * happen; the first token is itself a verified draft, since the first
 * verification is the prefill above K) are distributed as under plain sampling
 * from the full model.
 * Two-sample chi-square test of homogeneity at significance 0.001 per token
 * position, over 1200 seeds per arm; and the first token of each arm against the
 * distribution the test-only reference computes from the float64 forward's logits.
 * The same holds in a batch (batch/batch-loop.ts): sampled requests with a longer prompt,
 * eight at a time, each beside the others, under a KV budget that holds eight prompts but not
 * their growth past the next chunk, so that the batch preempts the latest arrivals (some before
 * their third token) and prefills them again later, their samplers' state kept.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchLoop } from "../../../gpu-service/src/engine/batch/batch-loop.js";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { logitsRef } from "../../../gpu-service/src/engine/reference/llama.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import {
  TwigDecoder,
  type TwigGenerateOptions,
  type TwigGenerateResult,
} from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { growTwig } from "../../../gpu-service/tools/make-tiny/grow-twig.js";
import { chiSquare, lastLayerAttention, promptRows, referenceDistribution } from "../../reference/index.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";

const weights = randomLlavaWeights(31, { numLayers: 8, vocabSize: 24, maxPositionEmbeddings: 96 });
// flatter logits so that many tokens are plausible
for (let i = 0; i < weights.text.lmHead.data.length; i++) weights.text.lmHead.data[i] *= 0.5;
const img = weights.config.imageTokenIndex;
const pixels = randomTensor(new Rng(8), [1, 3, 16, 16], 2).data;
const inputIds = [1, 5, img, 9, 4];
/** 57 prompt positions (41 text tokens and 16 visual): a batch slot's first 64 positions and one round of drafts. */
const longIds = [1, img, ...Array.from({ length: 40 }, (_, i) => 4 + (i % 16))];
const TRIALS = 1200;
const SAMPLING = { temperature: 1, topP: 0.95 };

/** Two-sample chi-square statistic and its critical value at 0.001 (Wilson-Hilferty), pooling rare categories. */
function homogeneity(a: number[], b: number[]): { chi2: number; critical: number } {
  const na = a.reduce((x, y) => x + y, 0);
  const nb = b.reduce((x, y) => x + y, 0);
  const cells: [number, number][] = [];
  let rare: [number, number] = [0, 0];
  a.forEach((ai, i) => {
    if (ai + b[i] >= 10) cells.push([ai, b[i]]);
    else rare = [rare[0] + ai, rare[1] + b[i]];
  });
  if (rare[0] + rare[1] > 0) cells.push(rare);
  let chi2 = 0;
  for (const [ai, bi] of cells) {
    const ea = (na * (ai + bi)) / (na + nb);
    const eb = (nb * (ai + bi)) / (na + nb);
    chi2 += (ai - ea) ** 2 / ea + (bi - eb) ** 2 / eb;
  }
  const df = cells.length - 1;
  const z = 3.0902;
  return { chi2, critical: df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3 };
}

/** Tokens 1, 2 and 3 of each seed's output, counted per position, and the drafts. */
interface Arm {
  counts: number[][];
  drafted: number;
  accepted: number;
}

/** Runs seeds 1..TRIALS: `run(seed)` starts one or more, from `seed` on (`results`), and maybe requests not counted beside them (`others`). */
async function arm(
  run: (seed: number) => { results: Promise<TwigGenerateResult>[]; others?: Promise<unknown>[] },
): Promise<Arm> {
  const V = weights.config.text.vocabSize;
  const a: Arm = { counts: [0, 1, 2].map(() => new Array(V).fill(0)), drafted: 0, accepted: 0 };
  for (let seed = 1; seed <= TRIALS; ) {
    const { results, others = [] } = run(seed);
    const [done] = await Promise.all([Promise.all(results), Promise.all(others)]);
    for (const r of done) {
      r.outputIds.forEach((id, pos) => {
        a.counts[pos][id]++;
      });
      for (const s of r.steps) {
        a.drafted += s.drafted.length;
        a.accepted += s.accepted;
      }
      seed++;
    }
  }
  return a;
}

describe("speculative sampling on the model", () => {
  let runtime: LlavaRuntime;
  let decoder: TwigDecoder;
  const base = new Map<number[], Promise<Arm>>();
  const request = (mode: "ssd-only" | "base", seed: number, maxTokens = 3, ids = inputIds): TwigGenerateOptions => ({
    inputIds: ids,
    pixelValues: pixels,
    plan: decoder.plan({ mode, draftThreshold: 0.01 }),
    maxTokens,
    sampling: SAMPLING,
    seed,
  });
  /** Plain sampling from the full model on a prompt, the reference arm. */
  const baseArm = (ids: number[]) => {
    const b = base.get(ids) ?? arm((seed) => ({ results: [decoder.generate(request("base", seed, 3, ids))] }));
    base.set(ids, b);
    return b;
  };
  beforeAll(async () => {
    runtime = await LlavaRuntime.create(weights, { threads: 1 });
    decoder = await TwigDecoder.create(runtime, growTwig(weights, 2, 2, 6));
  });
  afterAll(async () => {
    await decoder?.release();
    await runtime?.release();
  });

  /** Each position's counts against plain sampling's, and the first token against the reference distribution. */
  async function expectLossless(a: Arm, label: string, ids = inputIds) {
    const b = await baseArm(ids);
    // both paths of the rule ran: some drafts accepted, some rejected and resampled
    expect(a.accepted).toBeGreaterThan(0.1 * a.drafted);
    expect(a.accepted).toBeLessThan(0.9 * a.drafted);
    let compared = 0;
    for (const pos of [0, 1, 2]) {
      const { chi2, critical } = homogeneity(a.counts[pos], b.counts[pos]);
      expect(chi2, `${label}: token ${pos + 1}`).toBeLessThan(critical);
      compared++;
    }
    expect(compared).toBe(3);
    // the first token of both arms against the reference: the float64 forward's logits, the distribution written again
    const prompt = promptRows(weights, ids, pixels);
    const { hidden } = lastLayerAttention(weights, weights.text.layers, prompt.rows);
    const cfg = weights.config.text;
    const logits = logitsRef(cfg, weights.text.norm, weights.text.lmHead, hidden[hidden.length - 1]);
    const p = referenceDistribution(logits, SAMPLING.temperature, SAMPLING.topP);
    for (const [name, counts] of [
      [label, a.counts],
      ["base", b.counts],
    ] as const) {
      // a run whose first token is EOS ends with no output: count it as EOS
      const first = [...counts[0]];
      first[cfg.eosTokenId] += TRIALS - first.reduce((x, y) => x + y, 0);
      const { chi2, critical, impossible } = chiSquare(first, p);
      expect(impossible, `${name}: a token outside the nucleus`).toBe(0);
      expect(chi2, `${name}: first token against the reference distribution`).toBeLessThan(critical);
    }
  }

  it("draws the 1st, 2nd and 3rd tokens from the full model's distribution", async () => {
    await expectLossless(await arm((seed) => ({ results: [decoder.generate(request("ssd-only", seed))] })), "ssd");
  }, 120_000);

  it("does so in a batch, eight at a time, preempted and prefilled again", async () => {
    // KV for eight slots of 64 positions: eight prompts of 57 fit with a round of drafts, but not once
    // a sequence passes 64 (a slot's capacity is the longest sequence's, in chunks of 16)
    const cfg = weights.config.text;
    const perPosition = 2 * 4 * cfg.numKvHeads * (cfg.hiddenSize / cfg.numHeads) * (cfg.numLayers + 2);
    const batch = await BatchLoop.create(decoder, {
      maxBatch: 8,
      kvBudgetBytes: 8 * 64 * perPosition,
      draftCap: Number.POSITIVE_INFINITY,
    });
    let preempted = 0;
    try {
      // ten tokens each (the first three counted), so that they are still running when the batch outgrows the budget
      const a = await arm((seed) => ({
        results: Array.from({ length: Math.min(8, TRIALS - seed + 1) }, (_, i) =>
          batch.generate(request("ssd-only", seed + i, 10, longIds)).then((r) => {
            if ((r.preemptions ?? 0) > 0) preempted++;
            return { ...r, outputIds: r.outputIds.slice(0, 3) };
          }),
        ),
      }));
      console.log(
        `batched sampling: ${TRIALS} requests 8 at a time, ${batch.preemptions} preemptions (${preempted} requests preempted); ${a.accepted} of ${a.drafted} drafts accepted`,
      );
      expect(batch.peakBatch).toBe(8);
      expect(preempted).toBeGreaterThan(0.05 * TRIALS);
      await expectLossless(a, "batched ssd", longIds);
    } finally {
      await batch.release();
    }
  }, 300_000);
});
