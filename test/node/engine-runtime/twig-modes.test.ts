/**
 * TwigVLM on the tiny random model, every mode through one suite:
 *  - lossless: `twig` equals `ttp-only` and `ssd-only` equals `base`, token for
 *    token, across seeds and prompts, with EOS, max tokens and stop callbacks
 *    landing inside accepted drafts;
 *  - TTP keeps exactly the top-R of an independently computed score (float64
 *    reference forward through lower layers and twig);
 *  - the three KV layouts: mid holds text + R visual tokens, top text only.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { topR, visualScores } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { decoderLayersRef } from "../../../gpu-service/src/engine/reference/llama.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { growTwig } from "../../../gpu-service/src/engine/twig/grow.js";
import { TwigDecoder, type TwigGenerateOptions } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import type { Mode } from "../../../gpu-service/src/engine/types.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";

const weights = randomLlavaWeights(21, { numLayers: 8, maxPositionEmbeddings: 128 });
const cfg = weights.config.text;
const img = weights.config.imageTokenIndex;
const S = weights.config.vision.imageSize;
const images = [1, 2, 3].map((seed) => randomTensor(new Rng(seed), [1, 3, S, S], 2).data);
const prompts = [
  [1, 5, img, 9, 4],
  [1, img, 7, 7, 30, 12],
  [1, 3, 8, img, 20],
];

describe("TwigVLM modes on a tiny random model", () => {
  let runtime: LlavaRuntime;
  let partial: TwigDecoder; // T=2: the draft path is a shallow stand-in for the full model
  let deep: TwigDecoder; // T=L-K: the draft path is the unpruned full model, so drafts mostly agree

  beforeAll(async () => {
    runtime = await LlavaRuntime.create(weights, { threads: 1 });
    partial = await TwigDecoder.create(runtime, growTwig(weights, 2, 2, 6));
    deep = await TwigDecoder.create(runtime, growTwig(weights, 2, 6, 6));
  });
  afterAll(async () => {
    await partial?.release();
    await deep?.release();
    await runtime?.release();
  });

  const run = (
    d: TwigDecoder,
    mode: Mode,
    o: Partial<TwigGenerateOptions> & { inputIds: number[]; pixelValues: Float32Array },
  ) => d.generate({ mode, maxTokens: 24, sampling: { temperature: 0, topP: 1 }, retainBudget: 4, ...o });

  it("is lossless: twig = ttp-only and ssd-only = base, for every prompt, image and twig", async () => {
    let accepted = 0;
    for (const d of [partial, deep]) {
      for (let i = 0; i < prompts.length; i++) {
        const input = { inputIds: prompts[i], pixelValues: images[i] };
        const [twig, ttp, ssd, base] = await Promise.all(
          (["twig", "ttp-only", "ssd-only", "base"] as const).map((m) => run(d, m, input)),
        );
        expect(twig.outputIds).toEqual(ttp.outputIds);
        expect(ssd.outputIds).toEqual(base.outputIds);
        expect(twig.steps.length).toBeGreaterThan(0);
        accepted += ssd.steps.reduce((a, s) => a + s.accepted, 0) + twig.steps.reduce((a, s) => a + s.accepted, 0);
      }
    }
    expect(accepted).toBeGreaterThan(10); // the deep twig's drafts really were accepted, so acceptance paths ran
  });

  it("stays lossless when EOS, max tokens or a stop falls inside an accepted draft", async () => {
    const input = { inputIds: prompts[0], pixelValues: images[0] };
    const reference = await run(deep, "base", input);
    expect(reference.outputIds.length).toBeGreaterThan(6);
    const eos = reference.outputIds[5];
    const saved = cfg.eosTokenId;
    cfg.eosTokenId = eos;
    try {
      const a = await run(deep, "ssd-only", input);
      const b = await run(deep, "base", input);
      expect(a.outputIds).toEqual(b.outputIds);
      expect(a.finishReason).toBe("stop");
      expect(a.outputIds).not.toContain(eos);
    } finally {
      cfg.eosTokenId = saved;
    }
    for (const maxTokens of [1, 2, 3, 7]) {
      const a = await run(deep, "ssd-only", { ...input, maxTokens });
      expect(a.outputIds).toEqual(reference.outputIds.slice(0, maxTokens));
      expect(a.finishReason).toBe("length");
    }
    const stopAfter = reference.outputIds[4];
    const seen: number[] = [];
    const c = await run(deep, "ssd-only", {
      ...input,
      onTokens: (ids) => {
        seen.push(...ids);
        return !ids.includes(stopAfter);
      },
    });
    expect(c.finishReason).toBe("callback");
    expect(seen).toEqual(c.outputIds);
    expect(reference.outputIds.slice(0, seen.length)).toEqual(seen);
  });

  it("keeps the top-R visual tokens of the twig's last-layer attention, computed independently", async () => {
    for (let i = 0; i < prompts.length; i++) {
      const res = await run(partial, "ttp-only", { inputIds: prompts[i], pixelValues: images[i], maxTokens: 1 });
      const prompt = runtime.embedPrompt(prompts[i], await runtime.encodeImage(images[i]));
      const H = cfg.hiddenSize;
      const rows = Array.from({ length: prompt.positions.length }, (_, t) =>
        Float64Array.from(prompt.hidden.subarray(t * H, (t + 1) * H)),
      );
      const empty = () => ({ keys: [], values: [] });
      const lower = decoderLayersRef(cfg, weights.text.layers.slice(0, 2), rows, prompt.positions, [empty(), empty()]);
      const twigLayers = growTwig(weights, 2, 2, 6).layers;
      const tw = decoderLayersRef(cfg, twigLayers, lower.hidden, prompt.positions, [empty(), empty()]);
      const last = tw.probs[1]; // [heads][S][S]
      const n = prompt.positions.length;
      const flat = new Float32Array(last.flatMap((head) => head.flatMap((row) => row.slice(0, n))));
      const scores = visualScores(
        flat,
        { heads: cfg.numHeads, queries: n, keys: n },
        prompt.positions,
        prompt.visualStart,
        prompt.numVisual,
        "last-token",
      );
      const r = keptTokensForBudget(4, { visualTokens: 16, numLayers: 8, k: 2, finalWipeLayer: 6 });
      expect(res.r).toBe(r);
      expect(res.keptVisualIndices).toEqual(topR(scores, r));
    }
  });

  it("runs the layers above K on R visual tokens and the layers after K_f on none", async () => {
    const res = await run(partial, "twig", { inputIds: prompts[1], pixelValues: images[1], maxTokens: 1 });
    const textTokens = prompts[1].length - 1;
    expect(res.visualTokens).toBe(16);
    expect(res.r).toBe(keptTokensForBudget(4, { visualTokens: 16, numLayers: 8, k: 2, finalWipeLayer: 6 }));
    expect(res.layout).toEqual({
      lower: textTokens + 16,
      twig: textTokens + 16,
      mid: textTokens + res.r,
      top: textTokens,
    });
    const base = await run(partial, "base", { inputIds: prompts[1], pixelValues: images[1], maxTokens: 1 });
    expect(base.layout).toEqual({
      lower: textTokens + 16,
      twig: 0, // base mode never runs the twig
      mid: textTokens + 16,
      top: textTokens + 16,
    });
  });

  it("fastv and random keep R tokens chosen their own way; random is seeded", async () => {
    const input = { inputIds: prompts[2], pixelValues: images[2], maxTokens: 4 };
    const f = await run(partial, "fastv", input);
    const r1 = await run(partial, "random", { ...input, seed: 5 });
    const r2 = await run(partial, "random", { ...input, seed: 5 });
    expect(f.keptVisualIndices).toHaveLength(f.r);
    expect(r1.keptVisualIndices).toEqual(r2.keptVisualIndices);
    expect(r1.keptVisualIndices).toHaveLength(r1.r);
  });
});
