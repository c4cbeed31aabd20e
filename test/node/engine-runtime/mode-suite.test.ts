/**
 * Every decoding mode through one shared suite, the way interchangeable routers
 * share one test suite: the same table of prompts and pictures runs through the
 * real LocalEngine (tokenizer, image preprocessing, ONNX graphs, twig) on the
 * demo model in every mode, and each mode is checked for the invariants it
 * promises. The visual tokens the pruning modes keep are checked against
 * references that share no code with the engine's decoding:
 *  - PyTorch's kept indices (models/demo/parity.json, training/parity.py) where a
 *    case is one of the fixture's prompts at one of its budgets;
 *  - for every case, the test-only reference (test/reference/): the prompt
 *    tokenized by word lookup, PyTorch's preprocessed pixels of the picture, the
 *    float64 reference forward, TTP/FastV scoring and top-R written again.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadLlava } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import type { ScoreSource } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { InvalidRequestError } from "../../../gpu-service/src/engine/errors.js";
import type { EngineEvent, GenerateStats } from "../../../gpu-service/src/engine/events.js";
import { LocalEngine, type RequestTrace } from "../../../gpu-service/src/engine/local-engine.js";
import type { Mode, RequestInput } from "../../../gpu-service/src/engine/plan.js";
import { TextCodec } from "../../../gpu-service/src/engine/tokenizer.js";
import { MODE_PLANS, usesTwig } from "../../../gpu-service/src/engine/twig/modes.js";
import type { LlavaWeights, TwigWeights } from "../../../gpu-service/src/engine/weights.js";
import { fixtureInput, type ParityCase, readParityFixture } from "../../../gpu-service/tools/eval/parity.js";
import {
  lastLayerAttention,
  promptRows,
  referenceTopR,
  referenceVisualScores,
  tieAtBoundary,
  wordIds,
} from "../../reference/index.js";
import { repoRoot } from "../../support/gpu-service.js";

// the demo model (and the float64 reference on it) is heavy work for a shared 2-core machine: the
// limit only catches a hang, it is not a speed requirement
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

/** The suite's one parameter: a model directory with a twig and a PyTorch parity fixture. */
const MODEL_DIR = join(repoRoot, "models", "demo");
const DATA_DIR = join(repoRoot, "training", "data");
const fixture = readParityFixture(join(MODEL_DIR, "parity.json"));

const MODES = Object.keys(MODE_PLANS) as Mode[];
const MAX_TOKENS = 12;

/** The table of cases: each runs through every mode. Pictures are the fixture's (PyTorch preprocessed them too). */
const CASES: {
  name: string;
  image: string;
  request: Pick<RequestInput, "messages" | "prompt">;
  /** Index into the fixture's budgets (66.7/77.8/88.9% pruned); none: the model's default budget. */
  budget?: number;
  /** The scorer of TTP and FastV; none: the model's default. */
  scoreSource?: ScoreSource;
}[] = [
  {
    name: "chat question, 88.9% pruned, the model's default scorer",
    image: "test/0000.png",
    request: { messages: [{ role: "user", content: "what colour is the circle ?" }] },
    budget: 2,
  },
  {
    name: "chat description, 77.8% pruned, scored by the last prompt token",
    image: "test/0002.png",
    request: { messages: [{ role: "user", content: "describe the picture ." }] },
    budget: 1,
    scoreSource: "last-token",
  },
  {
    name: "raw prompt with the image in the middle, 66.7% pruned",
    image: "test/0001.png",
    request: { prompt: "<s>USER: how many objects <image> are there ? ASSISTANT:" },
    budget: 0,
  },
  {
    name: "raw prompt, image first, few text tokens, a 197x96 picture, the model's default budget",
    image: "parity/landscape.png",
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
});

async function generate(image: Uint8Array, params: Partial<RequestInput> & { mode: Mode }): Promise<Run> {
  const events: EngineEvent[] = [];
  const planned = await engine.plan({ image, maxTokens: MAX_TOKENS, temperature: 0, topP: 1, stop: [], ...params });
  await engine.generate(planned, (e) => events.push(e));
  const trace = engine.lastTrace as RequestTrace;
  const started = events[0];
  const finished = events[events.length - 1];
  if (started.type !== "started" || finished.type !== "finished") throw new Error("events out of order");
  const deltas = events.filter((e): e is Extract<EngineEvent, { type: "delta" }> => e.type === "delta");
  return { started, deltas, finished, trace };
}

/** Width and height of a fixture picture (as PyTorch read it). */
function pictureSize(image: string): [number, number] {
  const c = fixture.cases.find((x) => x.image === image);
  if (!c) throw new Error(`${image} is not a fixture picture`);
  return c.imageSize;
}

/** The fixture's case for this picture and chat question, if there is one. */
function fixtureCase(image: string, request: Pick<RequestInput, "messages" | "prompt">): ParityCase | undefined {
  const question = request.messages?.length === 1 ? request.messages[0].content : undefined;
  return fixture.cases.find((c) => c.image === image && c.question === question);
}

/**
 * Reference scores of the visual tokens, from the raw text and PyTorch's pixels of the picture: TTP (the twig's
 * last layer), FastV (base layer K), VisionZip (the tower's CLS attention), and the token ids they were fed.
 */
function referenceScores(image: string, request: Pick<RequestInput, "messages" | "prompt">, source: ScoreSource) {
  const pictured = fixture.cases.find((c) => c.image === image);
  if (!pictured) throw new Error(`${image} is not a fixture picture`);
  const inputIds =
    request.prompt !== undefined ? wordIds(MODEL_DIR, request.prompt) : fixtureCase(image, request)?.inputIds;
  if (!inputIds) throw new Error("a chat case must be a fixture case (its prompt ids are PyTorch's)");
  const pixels = fixtureInput(pictured, weights.config.imageMean, weights.config.imageStd);
  const prompt = promptRows(weights, inputIds, pixels);
  const lower = weights.text.layers.slice(0, twig.k);
  const score = (layers: typeof lower) =>
    referenceVisualScores(
      lastLayerAttention(weights, layers, prompt.rows).probs,
      prompt.visualStart,
      prompt.numVisual,
      source,
    );
  return {
    inputIds,
    twig: score([...lower, ...twig.layers]),
    fastv: score(lower),
    visionzip: Array.from(prompt.clsAttention),
  };
}

/** Kept indices against a reference's scores: equal, or (at an exact tie on the R-th score) equal above the tie. */
function expectKept(kept: number[], scores: number[], expected: number[], what: string) {
  expect(kept, what).toHaveLength(expected.length);
  if (!tieAtBoundary(scores, expected.length)) {
    expect(kept, what).toEqual(expected);
    return 0;
  }
  const boundary = [...scores].sort((a, b) => b - a)[expected.length - 1];
  expect(
    kept.filter((i) => scores[i] > boundary),
    what,
  ).toEqual(expected.filter((i) => scores[i] > boundary));
  return 1;
}

/** What every mode promises. */
function checkCommon(mode: Mode, run: Run, retainBudget: number | undefined, picture: [number, number]) {
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
  // where the visual tokens lie: the tower's patch grid over the picture padded (centred, LLaVA's offsets) to a square
  const grid = weights.config.vision.imageSize / weights.config.vision.patchSize;
  expect(grid * grid).toBe(N);
  const [w, h] = picture;
  const square = Math.max(w, h);
  expect(started.visualGrids).toEqual([
    {
      firstIndex: 0,
      rows: grid,
      cols: grid,
      left: (0 - Math.floor((square - w) / 2)) / w,
      top: (0 - Math.floor((square - h) / 2)) / h,
      width: square / w,
      height: square / h,
    },
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

/** How many kept sets were checked against PyTorch and against the reference, and exact ties met. */
const checked = { pytorch: 0, reference: 0, ties: 0 };

for (const c of CASES) {
  describe(`every mode on: ${c.name}`, () => {
    const runs = new Map<Mode, Run>();
    let image: Uint8Array;
    let reference: ReturnType<typeof referenceScores>;
    let otherSeed: Run;
    const retainBudget = c.budget === undefined ? undefined : fixture.budgets[c.budget].retainBudget;
    const pytorch = fixtureCase(c.image, c.request);

    beforeAll(async () => {
      image = new Uint8Array(readFileSync(join(DATA_DIR, c.image)));
      const request = { ...c.request, retainBudget, scoreSource: c.scoreSource };
      for (const mode of MODES) runs.set(mode, await generate(image, { ...request, mode, seed: 1 }));
      otherSeed = await generate(image, { ...request, mode: "random", seed: 2 });
      reference = referenceScores(
        c.image,
        c.request,
        c.scoreSource ?? (engine.info.twig?.defaultScoreSource as ScoreSource),
      );
    });
    const run = (m: Mode) => runs.get(m) as Run;
    const kept = (m: Mode) => run(m).started.keptVisualIndices;
    const tokens = (m: Mode) => run(m).trace.result.outputIds;

    /** A pruning mode's kept set: the reference's top R, and PyTorch's where the fixture has this case and budget. */
    const pruned = (mode: "ttp-only" | "fastv", scores: number[], method: "ttp" | "fastv") => {
      expect(run(mode).trace.inputIds).toEqual(reference.inputIds);
      const r = kept(mode).length;
      checked.ties += expectKept(kept(mode), scores, referenceTopR(scores, r), `${mode} against the reference`);
      checked.reference++;
      if (pytorch && c.budget !== undefined) {
        const want = pytorch.selection[method][c.scoreSource ?? (engine.info.twig?.defaultScoreSource as ScoreSource)];
        expect(r).toBe(fixture.budgets[c.budget].r);
        checked.ties += expectKept(kept(mode), want.scores, want.kept[c.budget], `${mode} against PyTorch`);
        checked.pytorch++;
      }
    };

    /** Each mode's own promise, beyond the common ones. */
    const INVARIANTS: Record<Mode, () => void | Promise<void>> = {
      base: () => expect(kept("base")).toEqual(Array.from({ length: engine.info.visualTokens }, (_, i) => i)),
      "ssd-only": () => {
        expect(tokens("ssd-only")).toEqual(tokens("base"));
        expect(kept("ssd-only")).toEqual(kept("base"));
      },
      "ttp-only": () => pruned("ttp-only", reference.twig, "ttp"),
      twig: () => {
        expect(tokens("twig")).toEqual(tokens("ttp-only"));
        expect(kept("twig")).toEqual(kept("ttp-only"));
      },
      fastv: () => pruned("fastv", reference.fastv, "fastv"),
      visionzip: () => {
        const r = kept("visionzip").length;
        checked.ties += expectKept(
          kept("visionzip"),
          reference.visionzip,
          referenceTopR(reference.visionzip, r),
          "visionzip",
        );
        checked.reference++;
      },
      random: async () => {
        const again = await generate(image, { ...c.request, retainBudget, mode: "random", seed: 1 });
        expect(again.started.keptVisualIndices).toEqual(kept("random"));
        expect(again.trace.result.outputIds).toEqual(tokens("random"));
        expect(otherSeed.started.keptVisualIndices).not.toEqual(kept("random"));
      },
    };

    for (const mode of MODES) {
      it(mode, async () => {
        checkCommon(mode, run(mode), retainBudget, pictureSize(c.image));
        await INVARIANTS[mode]();
      });
    }
  });
}

describe("the references were used", () => {
  it("checked every pruning mode's kept set against the reference, and TTP and FastV against PyTorch", () => {
    // ttp-only, fastv and visionzip in every case; ttp-only and fastv in the fixture's cases with a budget
    const inFixture = CASES.filter((c) => c.budget !== undefined && fixtureCase(c.image, c.request)).length;
    expect(inFixture).toBe(2);
    expect(checked).toEqual({ reference: 3 * CASES.length, pytorch: 2 * inFixture, ties: checked.ties });
    console.log(
      `mode suite: ${checked.reference} kept sets against the reference, ${checked.pytorch} against PyTorch, ${checked.ties} exact ties`,
    );
  });
});

describe("a prompt that ends with the image", () => {
  it("runs in the modes that keep every visual token and is refused by the pruning modes", async () => {
    const image = new Uint8Array(readFileSync(join(DATA_DIR, "test/0004.png")));
    for (const mode of MODES) {
      // a budget only where the mode prunes, and one the model takes (R-bar from 18 to 108 here): planning
      // refuses a budget out of range in every mode, as the service always has
      const retainBudget = MODE_PLANS[mode].pruning === "none" ? undefined : 36;
      const request = generate(image, { mode, prompt: "USER : <image>", retainBudget });
      if (MODE_PLANS[mode].pruning === "none") checkCommon(mode, await request, 6, [96, 96]);
      else await expect(request).rejects.toThrow(InvalidRequestError);
    }
  });
});
