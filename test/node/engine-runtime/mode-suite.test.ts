/**
 * Every decoding mode through one shared suite, the way interchangeable routers
 * share one test suite: the same table of prompts and images runs through the
 * real LocalEngine (tokenizer, image preprocessing, ONNX graphs, twig) in every
 * mode, and each mode is checked for the invariants it promises. The kept visual
 * tokens of the pruning modes are checked against scores computed independently
 * by the float64 reference (vision tower, lower layers, twig).
 *
 * The model directory is the one parameter (MODEL_DIR below): the tiny random
 * model with its twig today; the trained demo model once it lands.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadLlava } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { topR, visualScores } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { LocalEngine, type RequestTrace } from "../../../gpu-service/src/engine/local-engine.js";
import { decoderLayersRef, type Vec } from "../../../gpu-service/src/engine/reference/llama.js";
import { visionForwardRef } from "../../../gpu-service/src/engine/reference/vision.js";
import { TextCodec } from "../../../gpu-service/src/engine/tokenizer.js";
import { MODE_PLANS, usesTwig } from "../../../gpu-service/src/engine/twig/modes.js";
import {
  type EngineEvent,
  type GenerateParams,
  type GenerateStats,
  InvalidRequestError,
  type LlavaWeights,
  type Mode,
  type TwigWeights,
} from "../../../gpu-service/src/engine/types.js";
import { writeTinyModel } from "../../../gpu-service/tools/make-tiny/tiny-model.js";

const dir = mkdtempSync(join(tmpdir(), "twig-mode-suite-"));
/** The suite's one parameter: a model directory with a twig. */
const MODEL_DIR = join(dir, "tiny");
writeTinyModel(MODEL_DIR, 11);

const MODES = Object.keys(MODE_PLANS) as Mode[];
const MAX_TOKENS = 12;

async function picture(kind: "flat" | "noise" | "stripes", seed: number): Promise<Uint8Array> {
  const [w, h] = [40, 30];
  const rng = new Rng(seed);
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    const x = i % w;
    for (let c = 0; c < 3; c++) {
      px[i * 3 + c] =
        kind === "flat" ? 40 + 60 * c : kind === "noise" ? Math.floor(rng.next() * 256) : (x >> 2) % 2 ? 230 : 20 * c;
    }
  }
  return new Uint8Array(
    await sharp(px, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toBuffer(),
  );
}

/** The table of cases: each runs through every mode. */
const CASES: {
  name: string;
  image: () => Promise<Uint8Array>;
  request: Pick<GenerateParams, "messages" | "prompt">;
  /** Share of the visual tokens the pruning modes keep above K (sets R-bar); none: the model's default budget. */
  keep?: number;
}[] = [
  {
    name: "chat question, flat picture",
    image: () => picture("flat", 1),
    request: { messages: [{ role: "user", content: "what colour is the circle ?" }] },
    keep: 0.25,
  },
  {
    name: "chat description, noisy picture",
    image: () => picture("noise", 2),
    request: { messages: [{ role: "user", content: "describe the scene" }] },
    keep: 0.4,
  },
  {
    name: "raw prompt with the image in the middle, stripes",
    image: () => picture("stripes", 3),
    request: { prompt: "USER : how many shapes <image> are there ? ASSISTANT :" },
    keep: 0.5,
  },
  {
    name: "raw prompt, image first, few text tokens, the model's default budget",
    image: () => picture("noise", 4),
    request: { prompt: "<image> red" },
  },
];

interface Run {
  started: Extract<EngineEvent, { type: "started" }>;
  deltas: Extract<EngineEvent, { type: "delta" }>[];
  finished: Extract<EngineEvent, { type: "finished" }>;
  trace: RequestTrace;
}

let engine: LocalEngine;
let weights: LlavaWeights;
let twig: TwigWeights;
let codec: TextCodec;

beforeAll(async () => {
  engine = await LocalEngine.load(MODEL_DIR, { threads: 1 });
  weights = loadLlava(MODEL_DIR);
  twig = engine.twigWeights as TwigWeights;
  codec = TextCodec.load(MODEL_DIR);
});
afterAll(async () => {
  await engine?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function generate(image: Uint8Array, params: Partial<GenerateParams> & { mode: Mode }): Promise<Run> {
  const events: EngineEvent[] = [];
  await engine.generate({ image, maxTokens: MAX_TOKENS, temperature: 0, topP: 1, stop: [], ...params }, (e) =>
    events.push(e),
  );
  const trace = engine.lastTrace as RequestTrace;
  const started = events[0];
  const finished = events[events.length - 1];
  if (started.type !== "started" || finished.type !== "finished") throw new Error("events out of order");
  const deltas = events.filter((e): e is Extract<EngineEvent, { type: "delta" }> => e.type === "delta");
  return { started, deltas, finished, trace };
}

/** Float64 reference scores of the visual tokens: TTP (twig's last layer), FastV (base layer K), VisionZip (CLS). */
function referenceScores(trace: RequestTrace) {
  const cfg = weights.config.text;
  const H = cfg.hiddenSize;
  const vision = visionForwardRef(weights, trace.pixelValues);
  const embed = (id: number) => Float64Array.from(weights.text.embedTokens.data.subarray(id * H, (id + 1) * H));
  const ids = trace.inputIds;
  const rows: Vec[] = [
    ...ids.slice(0, trace.imagePosition).map(embed),
    ...vision.features,
    ...ids.slice(trace.imagePosition + 1).map(embed),
  ];
  const positions = rows.map((_, i) => i);
  const empty = () => ({ keys: [], values: [] });
  const lower = decoderLayersRef(cfg, weights.text.layers.slice(0, twig.k), rows, positions, twig.layers.map(empty));
  const tw = decoderLayersRef(cfg, twig.layers, lower.hidden, positions, twig.layers.map(empty));
  const S = rows.length;
  const attention = (probs: number[][][]) =>
    visualScores(
      new Float32Array(probs.flat(2)),
      { heads: cfg.numHeads, queries: S, keys: S },
      positions,
      trace.imagePosition,
      vision.features.length,
      "last-token",
    );
  return {
    twig: attention(tw.probs[twig.t - 1]),
    fastv: attention(lower.probs[twig.k - 1]),
    visionzip: vision.clsAttention,
  };
}

/** What every mode promises. */
function checkCommon(mode: Mode, run: Run, retainBudget: number | undefined) {
  const { started, deltas, finished, trace } = run;
  const r = trace.result;
  const s: GenerateStats = finished.stats;
  const N = engine.info.visualTokens;
  const plan = MODE_PLANS[mode];
  // kept visual tokens: sorted, unique, in range; R of them (all N without pruning)
  const kept = started.keptVisualIndices;
  expect(kept.every((v, i) => Number.isInteger(v) && v >= 0 && v < N && (i === 0 || v > kept[i - 1]))).toBe(true);
  const R =
    plan.pruning === "none"
      ? N
      : keptTokensForBudget(retainBudget ?? engine.info.twig?.defaultRetainBudget ?? 0, {
          visualTokens: N,
          numLayers: engine.info.numLayers,
          k: twig.k,
          finalWipeLayer: twig.finalWipeLayer,
        });
  expect(kept).toHaveLength(R);
  expect(r.keptVisualIndices).toEqual(kept);
  expect(r.r).toBe(R);
  expect(s.visualTokensKept).toBe(R);
  expect(r.retainBudget).toBe(plan.pruning === "none" ? null : (retainBudget ?? engine.info.twig?.defaultRetainBudget));
  // the three KV layouts: lower (and the twig, when it runs) all; mid text + R; top text only when pruning
  const S = started.promptTokens;
  expect(r.layout).toEqual({
    lower: S,
    twig: usesTwig(plan) ? S : 0,
    mid: S - N + R,
    top: plan.pruning === "none" ? S : S - N,
  });
  // the output: deltas carry every token once, the text decodes from them, the finish reason fits
  const ids = deltas.flatMap((d) => d.tokenIds);
  expect(ids).toEqual(r.outputIds);
  expect(finished.usage.completionTokens).toBe(ids.length);
  expect(deltas.map((d) => d.text).join("")).toBe(codec.decode(ids));
  expect(ids).not.toContain(weights.config.text.eosTokenId);
  if (finished.finishReason === "length") expect(ids).toHaveLength(MAX_TOKENS);
  else expect(finished.finishReason).toBe("stop");
  // statistics agree with each other and with the steps
  expect(s.verifications).toBe(r.steps.length);
  expect(s.draftedTokens).toBe(r.steps.reduce((a, x) => a + x.drafted.length, 0));
  expect(s.acceptedTokens).toBe(r.steps.reduce((a, x) => a + x.accepted, 0));
  expect(s.draftedTokens).toBeGreaterThanOrEqual(s.acceptedTokens);
  expect(s.acceptedLengthHistogram.reduce((a, b) => a + b, 0)).toBe(s.verifications);
  expect(s.acceptedLengthHistogram.reduce((a, b, i) => a + b * i, 0)).toBe(s.acceptedTokens);
  expect(s.acceptanceRate).toBeCloseTo(s.draftedTokens ? s.acceptedTokens / s.draftedTokens : 0, 12);
  expect(s.meanAcceptedLength).toBeCloseTo(s.verifications ? s.acceptedTokens / s.verifications : 0, 12);
  expect(deltas.reduce((a, d) => a + d.acceptedDraftTokens, 0)).toBeLessThanOrEqual(s.acceptedTokens);
  // a delta holds a verification's accepted drafts or the model's own token, never both
  expect(deltas.filter((d) => d.acceptedDraftTokens !== 0 && d.acceptedDraftTokens !== d.tokenIds.length)).toEqual([]);
  if (!plan.speculative) expect(deltas.every((d) => d.acceptedDraftTokens === 0)).toBe(true);
  // where the visual tokens lie: the tower's patch grid over the 40x30 picture padded (centred) to 40x40
  const side = weights.config.vision.imageSize / weights.config.vision.patchSize;
  expect(side * side).toBe(N);
  expect(started.visualGrids).toEqual([
    { firstIndex: 0, rows: side, cols: side, left: 0, top: -5 / 30, width: 1, height: 40 / 30 },
  ]);
  expect(s.prefillMs).toBeLessThanOrEqual(s.timeToFirstTokenMs);
  for (const step of r.steps) {
    expect(step.drafted.length).toBeGreaterThanOrEqual(1);
    expect(step.drafted.length).toBeLessThanOrEqual(5);
    expect(step.accepted).toBeLessThanOrEqual(step.drafted.length);
    expect(step.drafted.slice(0, -1)).not.toContain(weights.config.text.eosTokenId);
  }
  if (plan.speculative) expect(r.steps.length).toBeGreaterThan(0);
  else expect(r.steps).toEqual([]);
}

for (const c of CASES) {
  describe(`every mode on: ${c.name}`, () => {
    const runs = new Map<Mode, Run>();
    let image: Uint8Array;
    let reference: ReturnType<typeof referenceScores>;
    let otherSeed: Run;

    let retainBudget: number | undefined;

    beforeAll(async () => {
      image = await c.image();
      if (c.keep !== undefined) {
        // R-bar = (N*K + R*(K_f - K)) / L for R = keep * N
        const N = engine.info.visualTokens;
        retainBudget = (N * twig.k + Math.round(c.keep * N) * (twig.finalWipeLayer - twig.k)) / engine.info.numLayers;
      }
      const request = { ...c.request, retainBudget };
      for (const mode of MODES) runs.set(mode, await generate(image, { ...request, mode, seed: 1 }));
      otherSeed = await generate(image, { ...request, mode: "random", seed: 2 });
      reference = referenceScores((runs.get("base") as Run).trace);
    });
    const run = (m: Mode) => runs.get(m) as Run;
    const kept = (m: Mode) => run(m).started.keptVisualIndices;
    const tokens = (m: Mode) => run(m).trace.result.outputIds;

    /** Each mode's own promise, beyond the common ones. */
    const INVARIANTS: Record<Mode, () => void | Promise<void>> = {
      base: () => expect(kept("base")).toEqual(Array.from({ length: engine.info.visualTokens }, (_, i) => i)),
      "ssd-only": () => {
        expect(tokens("ssd-only")).toEqual(tokens("base"));
        expect(kept("ssd-only")).toEqual(kept("base"));
      },
      "ttp-only": () => expect(kept("ttp-only")).toEqual(topR(reference.twig, kept("ttp-only").length)),
      twig: () => {
        expect(tokens("twig")).toEqual(tokens("ttp-only"));
        expect(kept("twig")).toEqual(kept("ttp-only"));
      },
      fastv: () => expect(kept("fastv")).toEqual(topR(reference.fastv, kept("fastv").length)),
      visionzip: () => expect(kept("visionzip")).toEqual(topR(reference.visionzip, kept("visionzip").length)),
      random: async () => {
        const again = await generate(image, { ...c.request, retainBudget, mode: "random", seed: 1 });
        expect(again.started.keptVisualIndices).toEqual(kept("random"));
        expect(again.trace.result.outputIds).toEqual(tokens("random"));
        expect(otherSeed.started.keptVisualIndices).not.toEqual(kept("random"));
      },
    };

    for (const mode of MODES) {
      it(mode, async () => {
        checkCommon(mode, run(mode), retainBudget);
        await INVARIANTS[mode]();
      });
    }
  });
}

describe("a prompt that ends with the image", () => {
  it("runs in the modes that keep every visual token and is refused by the pruning modes", async () => {
    const image = await picture("flat", 5);
    for (const mode of MODES) {
      const request = generate(image, { mode, prompt: "USER : <image>", retainBudget: 6 });
      if (MODE_PLANS[mode].pruning === "none") checkCommon(mode, await request, 6);
      else await expect(request).rejects.toThrow(InvalidRequestError);
    }
  });
});
