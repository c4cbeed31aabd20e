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
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { logitsRef } from "../../../gpu-service/src/engine/reference/llama.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { TwigDecoder } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { growTwig } from "../../../gpu-service/tools/make-tiny/grow-twig.js";
import { chiSquare, lastLayerAttention, promptRows, referenceDistribution } from "../../reference/index.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";

const weights = randomLlavaWeights(31, { numLayers: 8, vocabSize: 24, maxPositionEmbeddings: 96 });
// flatter logits so that many tokens are plausible
for (let i = 0; i < weights.text.lmHead.data.length; i++) weights.text.lmHead.data[i] *= 0.5;
const img = weights.config.imageTokenIndex;
const pixels = randomTensor(new Rng(8), [1, 3, 16, 16], 2).data;
const inputIds = [1, 5, img, 9, 4];

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

describe("speculative sampling on the model", () => {
  let runtime: LlavaRuntime;
  let decoder: TwigDecoder;
  beforeAll(async () => {
    runtime = await LlavaRuntime.create(weights, { threads: 1 });
    decoder = await TwigDecoder.create(runtime, growTwig(weights, 2, 2, 6));
  });
  afterAll(async () => {
    await decoder?.release();
    await runtime?.release();
  });

  it("draws the 1st, 2nd and 3rd tokens from the full model's distribution", async () => {
    const V = weights.config.text.vocabSize;
    const trials = 1200;
    const counts = {
      ssd: [0, 1, 2].map(() => new Array(V).fill(0)),
      base: [0, 1, 2].map(() => new Array(V).fill(0)),
    };
    let accepted = 0;
    let drafted = 0;
    for (const mode of ["ssd-only", "base"] as const) {
      for (let seed = 1; seed <= trials; seed++) {
        const r = await decoder.generate({
          inputIds,
          pixelValues: pixels,
          plan: decoder.plan({ mode, draftThreshold: 0.01 }),
          maxTokens: 3,
          sampling: { temperature: 1, topP: 0.95 },
          seed,
        });
        const key = mode === "ssd-only" ? "ssd" : "base";
        r.outputIds.forEach((id, pos) => {
          counts[key][pos][id]++;
        });
        for (const s of r.steps) {
          drafted += s.drafted.length;
          accepted += s.accepted;
        }
      }
    }
    // both paths of the rule ran: some drafts accepted, some rejected and resampled
    expect(accepted).toBeGreaterThan(0.1 * drafted);
    expect(accepted).toBeLessThan(0.9 * drafted);
    let compared = 0;
    for (const pos of [0, 1, 2]) {
      const { chi2, critical } = homogeneity(counts.ssd[pos], counts.base[pos]);
      expect(chi2, `token ${pos + 1}`).toBeLessThan(critical);
      compared++;
    }
    expect(compared).toBe(3);
    // the first token of both arms against the reference: the float64 forward's logits, the distribution written again
    const prompt = promptRows(weights, inputIds, pixels);
    const { hidden } = lastLayerAttention(weights, weights.text.layers, prompt.rows);
    const cfg = weights.config.text;
    const logits = logitsRef(cfg, weights.text.norm, weights.text.lmHead, hidden[hidden.length - 1]);
    const p = referenceDistribution(logits, 1, 0.95);
    for (const arm of ["ssd", "base"] as const) {
      // a run whose first token is EOS ends with no output: count it as EOS
      const first = [...counts[arm][0]];
      first[cfg.eosTokenId] += trials - first.reduce((a, b) => a + b, 0);
      const { chi2, critical, impossible } = chiSquare(first, p);
      expect(impossible, `${arm}: a token outside the nucleus`).toBe(0);
      expect(chi2, `${arm}: first token against the reference distribution`).toBeLessThan(critical);
    }
  }, 120_000);
});
