/**
 * The TwigDecoder's own promises on a tiny random model, beyond the shared mode
 * suite (mode-suite.test.ts) and the lossless runs (lossless.test.ts):
 *  - the first verification pass is also the prefill of the layers above K: SSD
 *    modes run those layers once per verification and never on the prompt alone;
 *  - TTP's paper variant (attention summed over all text tokens) keeps the top-R of
 *    that score, computed by the test-only reference (test/reference/) from its own
 *    prompt rows and the float64 reference forward;
 *  - budgets out of range and prompts that end with the image are refused.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import type { ScoreSource } from "../../../gpu-service/src/engine/decoding/ttp.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import type { AccelerationAsk } from "../../../gpu-service/src/engine/plan-request.js";
import type { DecoderSegment } from "../../../gpu-service/src/engine/runtime/decoder-segment.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { TwigDecoder, type TwigGenerateOptions } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { growTwig } from "../../../gpu-service/tools/make-tiny/grow-twig.js";
import {
  lastLayerAttention,
  promptRows,
  referenceTopR,
  referenceVisualScores,
  tieAtBoundary,
} from "../../reference/index.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";

const weights = randomLlavaWeights(21, { numLayers: 8, maxPositionEmbeddings: 128 });
const img = weights.config.imageTokenIndex;
const S = weights.config.vision.imageSize;
const images = [1, 2, 3].map((seed) => randomTensor(new Rng(seed), [1, 3, S, S], 2).data);
const prompts = [
  [1, 5, img, 9, 4],
  [1, img, 7, 7, 30, 12],
  [1, 3, 8, img, 20],
];
const shape = { visualTokens: 16, numLayers: 8, k: 2, finalWipeLayer: 6 };

describe("TwigDecoder on a tiny random model", () => {
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
    o: Partial<TwigGenerateOptions> & Omit<AccelerationAsk, "mode"> & { inputIds: number[]; pixelValues: Float32Array },
  ) => {
    const { retainBudget = 6, draftLength, draftThreshold, scoreSource, ...rest } = o;
    const plan = o.plan ?? d.plan({ mode, retainBudget, draftLength, draftThreshold, scoreSource });
    return d.generate({ maxTokens: 16, sampling: { temperature: 0, topP: 1 }, ...rest, plan });
  };

  /** Records the tokens of every pass through a segment (a spy on the real segment). */
  function spy(segment: DecoderSegment): { calls: number[][]; restore: () => void } {
    const calls: number[][] = [];
    const original = segment.run;
    segment.run = (hidden, positions, caches) => {
      calls.push([...positions]);
      return original.call(segment, hidden, positions, caches);
    };
    const restore = () => {
      segment.run = original;
    };
    return { calls, restore };
  }

  it("runs the layers above K once per verification: the first one is the prompt's prefill too", async () => {
    for (const mode of ["twig", "ssd-only"] as const) {
      for (let i = 0; i < prompts.length; i++) {
        const mid = spy(deep.parts.mid);
        const top = spy(deep.parts.top as DecoderSegment);
        let res: Awaited<ReturnType<typeof run>>;
        try {
          res = await run(deep, mode, { inputIds: prompts[i], pixelValues: images[i], draftThreshold: 0 });
        } finally {
          mid.restore();
          top.restore();
        }
        const promptRows = res.layout.mid;
        expect(mid.calls).toHaveLength(res.steps.length);
        expect(top.calls).toHaveLength(res.steps.length);
        // pass 1: the prompt's rows (text + kept visual tokens at their original positions) and the first drafts
        const S = res.promptTokens;
        const drafts = res.steps[0].drafted.length;
        expect(mid.calls[0]).toHaveLength(promptRows + drafts);
        expect(mid.calls[0].slice(promptRows)).toEqual(Array.from({ length: drafts }, (_, j) => S + j));
        expect(top.calls[0]).toHaveLength(res.layout.top + drafts);
        // later passes: the last verified token and the new drafts
        res.steps.slice(1).forEach((s, j) => {
          expect(mid.calls[j + 1]).toHaveLength(1 + s.drafted.length);
        });
        expect(res.steps.reduce((a, s) => a + s.accepted, 0)).toBeGreaterThan(0);
      }
    }
  });

  it("runs plain modes one pass per token, the prompt's in the first", async () => {
    const mid = spy(partial.parts.mid);
    let res: Awaited<ReturnType<typeof run>>;
    try {
      res = await run(partial, "ttp-only", { inputIds: prompts[0], pixelValues: images[0], maxTokens: 6 });
    } finally {
      mid.restore();
    }
    expect(res.outputIds).toHaveLength(6);
    expect(mid.calls.map((c) => c.length)).toEqual([res.layout.mid, 1, 1, 1, 1, 1]);
    expect(res.layout.mid).toBe(prompts[0].length - 1 + keptTokensForBudget(6, shape));
  });

  it("scores by the attention summed over all text tokens when asked (the paper's formula)", async () => {
    let checked = 0;
    for (let i = 0; i < prompts.length; i++) {
      const res = await run(partial, "ttp-only", {
        inputIds: prompts[i],
        pixelValues: images[i],
        maxTokens: 1,
        scoreSource: "all-text",
      });
      // the reference: its own prompt rows (float64 vision tower, embeddings), forward, scoring and top-R
      const prompt = promptRows(weights, prompts[i], images[i]);
      const { probs } = lastLayerAttention(
        weights,
        [...weights.text.layers.slice(0, 2), ...growTwig(weights, 2, 2, 6).layers],
        prompt.rows,
      );
      const allText = referenceVisualScores(probs, prompt.visualStart, prompt.numVisual, "all-text");
      const lastToken = referenceVisualScores(probs, prompt.visualStart, prompt.numVisual, "last-token");
      const r = keptTokensForBudget(6, shape);
      expect(tieAtBoundary(allText, r)).toBe(false);
      expect(res.keptVisualIndices).toEqual(referenceTopR(allText, r));
      // the option makes a difference here
      if (i === 0) expect(referenceTopR(allText, r)).not.toEqual(referenceTopR(lastToken, r));
      checked++;
    }
    expect(checked).toBe(prompts.length);
  });

  it("takes the twig's own default scorer when a request names none, and the request's when it does", async () => {
    const allTextTwig = await TwigDecoder.create(runtime, { ...growTwig(weights, 2, 2, 6), scoreSource: "all-text" });
    try {
      const kept = async (d: TwigDecoder, scoreSource?: ScoreSource) =>
        (await run(d, "ttp-only", { inputIds: prompts[0], pixelValues: images[0], maxTokens: 1, scoreSource }))
          .keptVisualIndices;
      const [allText, lastToken] = [await kept(partial, "all-text"), await kept(partial, "last-token")];
      expect(allText).not.toEqual(lastToken);
      expect(await kept(partial)).toEqual(lastToken); // a twig with no default: the released code's
      expect(await kept(allTextTwig)).toEqual(allText);
      expect(await kept(allTextTwig, "last-token")).toEqual(lastToken);
    } finally {
      await allTextTwig.release();
    }
  });

  it("refuses a budget outside what the shape allows, and pruning a prompt that ends with the image", async () => {
    const input = { inputIds: prompts[0], pixelValues: images[0], maxTokens: 2 };
    // planning refuses these budgets first (plan-request.test.ts); a plan that skipped it meets the decoder's assertion
    const unchecked = (mode: Mode, retainBudget: number) => ({ ...partial.plan({ mode }), retainBudget });
    await expect(run(partial, "twig", { ...input, plan: unchecked("twig", 3) })).rejects.toThrow(
      /retain budget 3 is outside/,
    );
    await expect(run(partial, "fastv", { ...input, plan: unchecked("fastv", 13) })).rejects.toThrow(/outside/);
    await expect(run(partial, "visionzip", { ...input, inputIds: [1, 5, img] })).rejects.toThrow(/after the image/);
    const base = await run(partial, "base", { ...input, inputIds: [1, 5, img] });
    expect(base.outputIds).toHaveLength(2);
  });
  it("decodes every mode to the same tokens and kept visual tokens with direct attention as with contrib", async () => {
    const directRuntime = await LlavaRuntime.create(weights, { threads: 1, attention: "direct" });
    const directTwig = await TwigDecoder.create(directRuntime, growTwig(weights, 2, 2, 6));
    try {
      for (const mode of ["base", "twig", "ssd-only", "ttp-only", "fastv", "random"] as Mode[])
        for (const [i, inputIds] of prompts.entries()) {
          const o = { inputIds, pixelValues: images[i], seed: 3 };
          const [a, b] = [await run(partial, mode, o), await run(directTwig, mode, o)];
          expect(b.outputIds, `${mode} prompt ${i}`).toEqual(a.outputIds);
          expect(b.keptVisualIndices, `${mode} prompt ${i}`).toEqual(a.keptVisualIndices);
        }
    } finally {
      await directTwig.release();
      await directRuntime.release();
    }
  });
});
