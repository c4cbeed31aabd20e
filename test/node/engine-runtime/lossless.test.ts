/**
 * SSD is lossless. In `twig` and `ssd-only` modes, greedy output equals the output of
 * the same (pruned or unpruned) model decoded one token at a time without drafting
 * (`ttp-only` and `base`), token for token, across many tiny random models (seeds,
 * depths, split points), prompts and images; with twigs that disagree with the model
 * (grown the paper's way, T=2) and twigs that agree with it (T = L-K: the draft path
 * is the unpruned full model, so drafts are accepted), at the paper's theta and at
 * theta = 0 (full-length drafts); and where EOS, max tokens or a stop lands inside an
 * accepted draft, through the decoder and through LocalEngine with stop strings.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import type { EngineEvent } from "../../../gpu-service/src/engine/events.js";
import { LocalEngine, type RequestTrace } from "../../../gpu-service/src/engine/local-engine.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import type { AccelerationAsk } from "../../../gpu-service/src/engine/plan-request.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import {
  type TwigDecoder as Decoder,
  TwigDecoder,
  type TwigGenerateOptions,
  type TwigGenerateResult,
} from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { growTwig } from "../../../gpu-service/tools/make-tiny/grow-twig.js";
import { writeTinyModel, writeTwig } from "../../../gpu-service/tools/make-tiny/tiny-model.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const MAX_TOKENS = 20;

/** A random model of the seed's own shape (depth 6-8, K 1-2, K_f between), its prompts and images. */
function world(seed: number) {
  const L = 6 + (seed % 3);
  const k = 1 + (seed % 2);
  const kf = k + 1 + (seed % (L - k));
  const weights = randomLlavaWeights(100 + seed, { numLayers: L, maxPositionEmbeddings: 96 });
  const img = weights.config.imageTokenIndex;
  const rng = new Rng(seed);
  const word = () => 3 + Math.floor(rng.next() * 30);
  const prompts = [
    [1, word(), img, word(), word()],
    [1, img, ...Array.from({ length: 6 }, word)],
    [1, word(), word(), word(), img, word()],
  ];
  const S = weights.config.vision.imageSize;
  const images = prompts.map(() => randomTensor(rng, [1, 3, S, S], 2).data);
  // the R-bar that keeps R = 2..9 of the 16 visual tokens in layers K+1..K_f
  const R = 2 + (seed % 8);
  const retainBudget = (16 * k + R * (kf - k)) / L;
  return { weights, L, k, kf, prompts, images, retainBudget };
}

type Options = Partial<TwigGenerateOptions> &
  Omit<AccelerationAsk, "mode"> & { inputIds: number[]; pixelValues: Float32Array };
const greedy = (d: Decoder, mode: Mode, o: Options) => {
  const { retainBudget, draftLength, draftThreshold, scoreSource, ...rest } = o;
  const plan = d.plan({ mode, retainBudget, draftLength, draftThreshold, scoreSource });
  return d.generate({ maxTokens: MAX_TOKENS, sampling: { temperature: 0, topP: 1 }, ...rest, plan });
};
const accepted = (r: TwigGenerateResult) => r.steps.reduce((a, s) => a + s.accepted, 0);

/** Index in the output where each verification's batch (accepted drafts + bonus) starts. */
function batchStarts(r: TwigGenerateResult): number[] {
  const starts: number[] = [];
  let at = 0;
  for (const s of r.steps) {
    starts.push(at);
    at += s.accepted + 1;
  }
  return starts;
}

/** Whether output token t came from an accepted draft (not a bonus) in run r. */
function fromAcceptedDraft(r: TwigGenerateResult, t: number): boolean {
  const starts = batchStarts(r);
  const i = starts.findLastIndex((s) => s <= t);
  return i >= 0 && t - starts[i] < r.steps[i].accepted;
}

describe("SSD is lossless across seeds, prompts, images and twigs", () => {
  /** Runs where the end of the output (EOS, max tokens) fell on a token from an accepted draft, over all seeds. */
  const insideDraft = { eos: 0, maxTokens: 0 };
  /** Ends tried over all seeds: an EOS placed at a token's first occurrence, a caller's stop after token t. */
  const tried = { eos: 0, stops: 0 };

  for (const seed of SEEDS) {
    describe(`seed ${seed}`, () => {
      const w = world(seed);
      let runtime: LlavaRuntime;
      let shallow: TwigDecoder;
      let deep: TwigDecoder;
      beforeAll(async () => {
        runtime = await LlavaRuntime.create(w.weights, { threads: 1 });
        shallow = await TwigDecoder.create(runtime, growTwig(w.weights, w.k, 2, w.kf));
        deep = await TwigDecoder.create(runtime, growTwig(w.weights, w.k, w.L - w.k, w.kf));
      });
      afterAll(async () => {
        await shallow?.release();
        await deep?.release();
        await runtime?.release();
      });

      it("twig = ttp-only and ssd-only = base, token for token", async () => {
        let deepAccepted = 0;
        for (const [name, d] of [
          ["shallow", shallow],
          ["deep", deep],
        ] as const) {
          for (let i = 0; i < w.prompts.length; i++) {
            const input = {
              inputIds: w.prompts[i],
              pixelValues: w.images[i],
              retainBudget: w.retainBudget,
              draftThreshold: i === 0 ? 0.6 : 0,
            };
            const twig = await greedy(d, "twig", input);
            const ttp = await greedy(d, "ttp-only", input);
            const ssd = await greedy(d, "ssd-only", input);
            const base = await greedy(d, "base", input);
            expect(twig.outputIds, `${name} twig, prompt ${i}`).toEqual(ttp.outputIds);
            expect(ssd.outputIds, `${name} ssd-only, prompt ${i}`).toEqual(base.outputIds);
            expect(twig.keptVisualIndices).toEqual(ttp.keptVisualIndices);
            expect(ssd.finishReason).toBe(base.finishReason);
            expect(twig.finishReason).toBe(ttp.finishReason);
            if (name === "deep") deepAccepted += accepted(twig) + accepted(ssd);
          }
        }
        expect(deepAccepted).toBeGreaterThan(0); // drafts were really accepted
      });

      it("stays lossless when EOS or max tokens lands inside an accepted draft", async () => {
        const cfg = w.weights.config.text;
        const input = {
          inputIds: w.prompts[1],
          pixelValues: w.images[1],
          retainBudget: w.retainBudget,
          draftThreshold: 0,
        };
        for (const mode of ["ssd-only", "twig"] as const) {
          const plain = mode === "ssd-only" ? "base" : "ttp-only";
          const reference = await greedy(deep, plain, input);
          const spec = await greedy(deep, mode, input);
          expect(spec.outputIds).toEqual(reference.outputIds);
          expect(accepted(spec)).toBeGreaterThan(0);
          // EOS: the first occurrence of some generated token becomes the end of sequence
          const saved = cfg.eosTokenId;
          let ends = 0;
          try {
            for (const t of [1, 2, 3, 4, 6, 7, 9]) {
              const token = reference.outputIds[t];
              if (token === undefined || reference.outputIds.indexOf(token) !== t) continue;
              ends++;
              cfg.eosTokenId = token;
              const a = await greedy(deep, mode, input);
              const b = await greedy(deep, plain, input);
              expect(a.outputIds).toEqual(b.outputIds);
              expect(a.outputIds).toEqual(reference.outputIds.slice(0, t));
              expect(a.finishReason).toBe("stop");
              if (fromAcceptedDraft(spec, t)) insideDraft.eos++;
            }
          } finally {
            cfg.eosTokenId = saved;
          }
          tried.eos += ends;
          // max tokens: the output is the reference's prefix, cut exactly there
          for (const maxTokens of [1, 2, 3, 4, 5, 7, 8, 13]) {
            const a = await greedy(deep, mode, { ...input, maxTokens });
            expect(a.outputIds).toEqual(reference.outputIds.slice(0, maxTokens));
            expect(a.finishReason).toBe(reference.outputIds.length >= maxTokens ? "length" : "stop");
            if (a.outputIds.length === maxTokens && fromAcceptedDraft(a, maxTokens - 1)) insideDraft.maxTokens++;
          }
        }
      });

      it("stops where the caller says, also inside an accepted draft", async () => {
        const input = {
          inputIds: w.prompts[2],
          pixelValues: w.images[2],
          retainBudget: w.retainBudget,
          draftThreshold: 0,
        };
        const reference = await greedy(deep, "base", input);
        let stopped = 0;
        for (const t of [1, 3, 4]) {
          if (t >= reference.outputIds.length) continue;
          stopped++;
          const seen: number[] = [];
          const r = await greedy(deep, "ssd-only", {
            ...input,
            onTokens: (ids) => {
              seen.push(...ids);
              return seen.length <= t;
            },
          });
          expect(r.finishReason).toBe("callback");
          expect(seen).toEqual(r.outputIds);
          expect(seen.length).toBeGreaterThan(t);
          expect(seen).toEqual(reference.outputIds.slice(0, seen.length));
        }
        tried.stops += stopped;
      });
    });
  }

  it("tried EOS and caller stops at many places (the loops above skip places an output does not reach)", () => {
    // per seed: up to 7 EOS places in each of 2 modes, and 3 stops
    console.log(`lossless: ${tried.eos} EOS places, ${tried.stops} caller stops`);
    expect(tried.eos).toBeGreaterThan(SEEDS.length * 4);
    expect(tried.stops).toBeGreaterThan(SEEDS.length * 2);
  });

  it("did end outputs inside accepted drafts, by EOS and by max tokens", () => {
    expect(insideDraft.eos).toBeGreaterThan(SEEDS.length / 2);
    expect(insideDraft.maxTokens).toBeGreaterThan(SEEDS.length / 2);
  });
});

describe("stop strings inside an accepted draft, through LocalEngine", () => {
  const dir = mkdtempSync(join(tmpdir(), "twig-lossless-"));
  let engine: LocalEngine;
  let image: Uint8Array;
  beforeAll(async () => {
    const weights = writeTinyModel(join(dir, "tiny"), 4);
    // a twig that is the whole unpruned model above K: its drafts are accepted
    writeTwig(join(dir, "deep"), growTwig(weights, 2, 6, 6));
    engine = await LocalEngine.load(join(dir, "tiny"), { twigDir: join(dir, "deep"), threads: 1 });
    const px = Buffer.alloc(20 * 20 * 3, 0).map((_, i) => (i * 37) % 256);
    image = new Uint8Array(
      await sharp(px, { raw: { width: 20, height: 20, channels: 3 } })
        .png()
        .toBuffer(),
    );
  });
  afterAll(async () => {
    await engine?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const generate = async (mode: Mode, stop: string[]) => {
    const events: EngineEvent[] = [];
    await engine.generate(
      await engine.plan({
        image,
        messages: [{ role: "user", content: "describe the scene" }],
        maxTokens: 24,
        temperature: 0,
        topP: 1,
        stop,
        mode,
        retainBudget: 6,
        draftThreshold: 0,
      }),
      (e) => events.push(e),
    );
    const text = events.map((e) => (e.type === "delta" ? e.text : "")).join("");
    const finished = events.find((e) => e.type === "finished");
    return { text, finished, trace: engine.lastTrace as RequestTrace, events };
  };

  it("gives the same text, tokens and usage as plain decoding", async () => {
    const tokenizer = JSON.parse(readFileSync(join(dir, "tiny", "tokenizer.json"), "utf8"));
    const words = Object.fromEntries(Object.entries(tokenizer.model.vocab).map(([w, id]) => [id, w]));
    let insideDraft = 0;
    let tried = 0;
    for (const [spec, plain] of [
      ["ssd-only", "base"],
      ["twig", "ttp-only"],
    ] as const) {
      const free = await generate(plain, []);
      const ids = free.trace.result.outputIds;
      expect(ids.length).toBeGreaterThan(8);
      const specFree = await generate(spec, []);
      for (const t of [2, 4, 5, 6, 8]) {
        // the stop: the words of tokens t-1 and t (first seen at t), so the answer ends before token t-1
        const stop = `${words[ids[t - 1]]} ${words[ids[t]]}`;
        // (the tokenizer's decoder joins some words without a space: skip stops the text does not hold once)
        if (free.text.indexOf(stop) < 0 || free.text.indexOf(stop) !== free.text.lastIndexOf(stop)) continue;
        tried++;
        const a = await generate(spec, [stop]);
        const b = await generate(plain, [stop]);
        expect(a.text).toBe(b.text);
        expect(a.text).not.toContain(stop);
        expect(a.trace.result.outputIds).toEqual(b.trace.result.outputIds);
        expect(a.finished).toMatchObject({ finishReason: "stop_sequence", usage: b.finished?.usage ?? {} });
        if (b.finished?.type === "finished") expect(b.finished.usage.completionTokens).toBe(t + 1);
        if (fromAcceptedDraft(specFree.trace.result, t)) insideDraft++;
      }
    }
    expect(tried).toBeGreaterThan(3);
    expect(insideDraft).toBeGreaterThan(0);
  });
});
