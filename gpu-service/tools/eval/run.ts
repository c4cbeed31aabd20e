/**
 * The demo model's evaluation: every held-out scene through every mode at the
 * three budgets that prune 66.7%, 77.8% and 88.9% of the visual tokens, all in
 * one run (requests interleaved, so that machine noise falls on every mode alike).
 *
 * Per configuration: short-answer accuracy, description precision and recall of
 * attributes, RelAcc against `base`, RelSpd as the paper defines it (generated
 * tokens over prefill + decode time, per sample, relative to `base`), acceptance
 * rate and mean accepted length, and whether the speculative modes' greedy
 * outputs equal those of the same pruned model decoded without drafting.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { budgetForPrunedFraction } from "../../src/engine/decoding/budget.js";
import type { ScoreSource } from "../../src/engine/decoding/ttp.js";
import { InvalidRequestError } from "../../src/engine/errors.js";
import type { GenerateStats } from "../../src/engine/events.js";
import type { LocalEngine } from "../../src/engine/local-engine.js";
import type { GenerateParams, Mode } from "../../src/engine/plan.js";
import { PRUNING_MODES } from "../../src/engine/twig/modes.js";
import { type ClipObject, clipDescriptionCounts, inFrame } from "./clip-answers.js";
import { descriptionCounts, descriptionMatch, questionKind, type SceneObject, sameAnswer } from "./scene-answers.js";

/** A held-out scene: a picture (the demo's and LLaVA-NeXT's worlds) or a clip's frames (the video world). */
export interface EvalScene {
  id: string;
  image?: string;
  /** A clip's frame files, in order. */
  frames?: string[];
  /** A clip's objects carry their frames and events (ClipObject). */
  objects: SceneObject[] | ClipObject[];
  questions: { question: string; answer: string }[];
  describe: { prompt: string; reference: string };
}

export interface EvalConfig {
  mode: Mode;
  /** Fraction of visual tokens pruned (R-bar = N * (1 - fraction)); undefined for unpruned modes. */
  pruned?: number;
  /** R-bar, for a model whose N is fixed; where N varies (LLaVA-NeXT, video) each request's is its own N's. */
  retainBudget?: number;
  /** How the pruning modes score visual tokens (TWIGVLM.md's TTP step 2); undefined = the engine's default. */
  scoreSource?: ScoreSource;
}

export interface EvalRow extends EvalConfig {
  label: string;
  shortAccuracy: number;
  shortCorrect: number;
  shortTotal: number;
  /** Short answers right / asked, per question kind (see questionKind). */
  shortByKind?: Record<string, { correct: number; total: number }>;
  descriptionPrecision: number;
  descriptionRecall: number;
  /** Attribute precision and recall under the best pairing of named and true objects (descriptionMatch); absent in runs before it. */
  descriptionMatchedPrecision?: number;
  descriptionMatchedRecall?: number;
  /** Objects named with all four attributes right, over objects named and over the scenes' objects. */
  descriptionObjectsPrecision?: number;
  descriptionObjectsRecall?: number;
  relAcc: number;
  relAccDescription: number;
  relSpdShort: number;
  relSpdLong: number;
  tokensPerSecondLong: number;
  acceptanceRate: number;
  meanAcceptedLength: number;
  visualTokensKept: number;
  /** For twig / ssd-only: outputs that differ from ttp-only / base at the same budget (must be 0). */
  losslessMismatches?: number;
}

export interface EvalResult {
  model: string;
  split: string;
  scenes: number;
  shortQuestions: number;
  /** N; the mean over the requests where it varies (LLaVA-NeXT, video). */
  visualTokens: number;
  rows: EvalRow[];
  /** How the pruning modes scored visual tokens: `--score-source`, else the model's default (absent: no twig). */
  scoreSource?: ScoreSource;
  seconds: number;
}

export const PRUNED_FRACTIONS = [2 / 3, 7 / 9, 8 / 9];

export function readSplit(dataDir: string, split: string, limit?: number): EvalScene[] {
  const lines = readFileSync(join(dataDir, `${split}.jsonl`), "utf8")
    .split("\n")
    .filter(Boolean);
  return lines.slice(0, limit ?? lines.length).map((l) => JSON.parse(l) as EvalScene);
}

/** A scene of a picture split (the demo's, LLaVA-NeXT's). */
export type PictureScene = EvalScene & { image: string };

/** `readSplit` for a split of pictures; refuses a record without one. */
export function readPictures(dataDir: string, split: string, limit?: number): PictureScene[] {
  return readSplit(dataDir, split, limit).map((s) => {
    if (typeof s.image !== "string") throw new Error(`${split}: scene ${s.id} has no picture`);
    return s as PictureScene;
  });
}

/** The configurations: unpruned modes, then each pruning mode at each pruned share (R-bar fixed when N is, `visualTokens`). */
export function configsFor(visualTokens: number | undefined, modes: Mode[]): EvalConfig[] {
  const out: EvalConfig[] = modes.filter((m) => m === "base" || m === "ssd-only").map((mode) => ({ mode }));
  for (const pruned of PRUNED_FRACTIONS)
    for (const mode of modes.filter((m) => PRUNING_MODES.includes(m)))
      out.push(
        visualTokens === undefined
          ? { mode, pruned }
          : { mode, pruned, retainBudget: budgetForPrunedFraction(pruned, visualTokens) },
      );
  return out;
}

/** A scene's picture or clip (its frames, lossless) as a request's media. */
export function mediaOf(scene: EvalScene, dataDir: string): Pick<GenerateParams, "image" | "video"> {
  if (scene.frames) return { video: { frames: scene.frames.map((f) => readFileSync(join(dataDir, f))) } };
  if (!scene.image) throw new Error(`scene ${scene.id} has neither an image nor frames`);
  return { image: readFileSync(join(dataDir, scene.image)) };
}

export function labelOf(c: EvalConfig): string {
  return c.pruned === undefined ? c.mode : `${c.mode} @ ${(c.pruned * 100).toFixed(1)}%`;
}

interface Sample {
  text: string;
  ids: number[];
  stats: GenerateStats;
  tokens: number;
}

async function ask(
  engine: LocalEngine,
  media: Pick<GenerateParams, "image" | "video">,
  visualTokens: number,
  question: string,
  c: EvalConfig,
  maxTokens: number,
): Promise<Sample> {
  let text = "";
  let stats: GenerateStats | undefined;
  let tokens = 0;
  const retainBudget =
    c.retainBudget ?? (c.pruned === undefined ? undefined : budgetForPrunedFraction(c.pruned, visualTokens));
  await engine.generate(
    await engine.plan({
      ...media,
      messages: [{ role: "user", content: question }],
      maxTokens,
      temperature: 0,
      topP: 1,
      stop: [],
      mode: c.mode,
      retainBudget,
      scoreSource: c.scoreSource,
    }),
    (e) => {
      if (e.type === "delta") text += e.text;
      if (e.type === "finished") {
        stats = e.stats;
        tokens = e.usage.completionTokens;
      }
    },
  );
  if (!stats) throw new Error("the engine finished without statistics");
  return { text, ids: engine.lastTrace?.result.outputIds ?? [], stats, tokens };
}

const speed = (s: Sample) => s.tokens / Math.max(1e-6, s.stats.prefillMs + s.stats.decodeMs);

export async function runEval(
  engine: LocalEngine,
  scenes: EvalScene[],
  dataDir: string,
  modes: Mode[],
  onProgress: (done: number, total: number) => void = () => {},
  scoreSource?: ScoreSource,
): Promise<EvalResult> {
  const t0 = performance.now();
  // N is the model's, or each request's own where it varies (LLaVA-NeXT's pictures, videos)
  const vary = engine.info.visualTokensVary === true;
  const n = engine.info.visualTokens;
  const tokensOf = async (media: Pick<GenerateParams, "image" | "video">) =>
    vary ? engine.countVisualTokens(media) : n;
  const media0 = mediaOf(scenes[0], dataDir);
  const n0 = await tokensOf(media0);
  const available: Mode[] = [];
  for (const m of modes) {
    try {
      await ask(
        engine,
        media0,
        n0,
        scenes[0].describe.prompt,
        { mode: m, retainBudget: m === "base" ? undefined : n0 / 3 },
        2,
      );
      available.push(m);
    } catch (err) {
      if (!(err instanceof InvalidRequestError)) throw err;
      console.error(`eval: skipping mode ${m}: ${err.message}`);
    }
  }
  const source = scoreSource ?? engine.info.twig?.defaultScoreSource;
  const configs = configsFor(vary ? undefined : n, available).map((c) =>
    c.pruned === undefined || !source ? c : { ...c, scoreSource: source },
  );
  // samples[config][sample]: short questions first, then the description, per scene
  const samples: Sample[][] = configs.map(() => []);
  const isLong: boolean[] = [];
  for (const [si, scene] of scenes.entries()) {
    const media = mediaOf(scene, dataDir);
    const N = await tokensOf(media);
    const asks = [
      ...scene.questions.map((q) => ({ q: q.question, max: 8, long: false })),
      { q: scene.describe.prompt, max: 96, long: true },
    ];
    for (const a of asks) {
      isLong.push(a.long);
      for (const [ci, c] of configs.entries()) samples[ci].push(await ask(engine, media, N, a.q, c, a.max));
    }
    onProgress(si + 1, scenes.length);
  }
  const truth: Truth[] = scenes.flatMap((s) => [
    ...s.questions.map((q) => ({ answer: q.answer, kind: questionKind(q.question, q.answer), objects: s.objects })),
    { objects: s.objects, frames: s.frames?.length },
  ]);
  const baseIndex = configs.findIndex((c) => c.mode === "base");
  const rows = configs.map((c, ci) => summarise(c, samples[ci], samples[baseIndex], isLong, truth));
  for (const [ci, c] of configs.entries()) {
    const twin =
      c.mode === "twig"
        ? configs.findIndex((d) => d.mode === "ttp-only" && d.pruned === c.pruned)
        : c.mode === "ssd-only"
          ? baseIndex
          : -1;
    if (twin >= 0)
      rows[ci].losslessMismatches = samples[ci].filter((s, i) => s.ids.join() !== samples[twin][i].ids.join()).length;
  }
  for (const r of rows) {
    const base = rows[baseIndex];
    r.relAcc = base.shortAccuracy ? r.shortAccuracy / base.shortAccuracy : 0;
    const f1 = (x: EvalRow) =>
      x.descriptionPrecision + x.descriptionRecall
        ? (2 * x.descriptionPrecision * x.descriptionRecall) / (x.descriptionPrecision + x.descriptionRecall)
        : 0;
    r.relAccDescription = f1(base) ? f1(r) / f1(base) : 0;
  }
  return {
    model: engine.info.name,
    split: "",
    scenes: scenes.length,
    shortQuestions: isLong.filter((l) => !l).length,
    visualTokens: vary ? meanVisualTokens(samples[baseIndex]) : n,
    rows,
    scoreSource: source,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** What a sample is scored against: a short answer, or the scene's objects (and a clip's frame count). */
interface Truth {
  answer?: string;
  kind?: string;
  objects: SceneObject[] | ClipObject[];
  frames?: number;
}

/** The mean N over samples, to one decimal. */
function meanVisualTokens(samples: Sample[]): number {
  const total = samples.reduce((a, s) => a + s.stats.visualTokens, 0);
  return Math.round((10 * total) / Math.max(1, samples.length)) / 10;
}

/** A description's counts: a picture's attributes keyed by place, or a clip's first frame and events. */
function describedCounts(text: string, t: Truth) {
  if (t.frames === undefined) {
    const objects = t.objects as SceneObject[];
    return { ...descriptionCounts(text, objects), ...descriptionMatch(text, objects), objects: objects.length };
  }
  const objects = t.objects as ClipObject[];
  // the three-way scores read the first frame, as the first part of a clip's description names it
  const first = inFrame(objects, 0);
  const opening = text.split(" then ")[0];
  return {
    ...clipDescriptionCounts(text, objects, t.frames),
    ...descriptionMatch(opening, first),
    objects: first.length,
  };
}

function summarise(c: EvalConfig, mine: Sample[], base: Sample[], isLong: boolean[], truth: Truth[]): EvalRow {
  const byKind: Record<string, { correct: number; total: number }> = {};
  let correct = 0;
  let total = 0;
  let dc = 0;
  let dm = 0;
  let dt = 0;
  let dMatched = 0;
  let dExact = 0;
  let dNamed = 0;
  let dObjects = 0;
  const rel = { short: [] as number[], long: [] as number[] };
  let longTokens = 0;
  let longMs = 0;
  let drafted = 0;
  let accepted = 0;
  let verifications = 0;
  let kept = 0;
  mine.forEach((s, i) => {
    const t = truth[i];
    if (isLong[i]) {
      const d = describedCounts(s.text, t);
      dc += d.correct;
      dm += d.mentioned;
      dt += d.truth;
      dMatched += d.matched;
      dExact += d.exact;
      dNamed += d.named;
      dObjects += d.objects;
      longTokens += s.tokens;
      longMs += s.stats.prefillMs + s.stats.decodeMs;
    } else {
      total++;
      const right = sameAnswer(s.text, t.answer ?? "");
      if (right) correct++;
      const kind = t.kind ?? "?";
      byKind[kind] ??= { correct: 0, total: 0 };
      const k = byKind[kind];
      k.total++;
      if (right) k.correct++;
    }
    const b = speed(base[i]);
    if (b > 0) (isLong[i] ? rel.long : rel.short).push(speed(s) / b);
    drafted += s.stats.draftedTokens;
    accepted += s.stats.acceptedTokens;
    verifications += s.stats.verifications;
    kept += s.stats.visualTokensKept;
  });
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  return {
    ...c,
    label: labelOf(c),
    shortAccuracy: total ? correct / total : 0,
    shortCorrect: correct,
    shortTotal: total,
    shortByKind: byKind,
    descriptionPrecision: dm ? dc / dm : 0,
    descriptionRecall: dt ? dc / dt : 0,
    descriptionMatchedPrecision: dm ? dMatched / dm : 0,
    descriptionMatchedRecall: dt ? dMatched / dt : 0,
    descriptionObjectsPrecision: dNamed ? dExact / dNamed : 0,
    descriptionObjectsRecall: dObjects ? dExact / dObjects : 0,
    relAcc: 0,
    relAccDescription: 0,
    relSpdShort: mean(rel.short),
    relSpdLong: mean(rel.long),
    tokensPerSecondLong: longMs ? (1000 * longTokens) / longMs : 0,
    acceptanceRate: drafted ? accepted / drafted : 0,
    meanAcceptedLength: verifications ? accepted / verifications : 0,
    visualTokensKept: mine.length ? kept / mine.length : 0,
  };
}
