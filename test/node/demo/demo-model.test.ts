/**
 * The shipped demo model (models/demo), through the real engine: it agrees with
 * PyTorch (fixtures written by training/parity.py: prompt ids, every value of the
 * preprocessed picture, logits, greedy output, and the visual tokens TTP and FastV
 * keep at each budget under each scorer), its answers to held-out
 * questions depend on the picture, and TwigVLM on it is lossless while drafts are
 * really accepted (a trained twig, unlike a random one, agrees with the model).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { ScoreSource } from "../../../gpu-service/src/engine/decoding/ttp.js";
import type { GenerateStats } from "../../../gpu-service/src/engine/events.js";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import { checkParity, readParityFixture } from "../../../gpu-service/tools/eval/parity.js";
import { parityFailures, selectionSummary } from "../../../gpu-service/tools/eval/parity-command.js";
import { readPictures, runEval } from "../../../gpu-service/tools/eval/run.js";
import { sameAnswer } from "../../../gpu-service/tools/eval/scene-answers.js";
import { repoRoot } from "../../support/gpu-service.js";

// the demo model (and the float64 reference on it) is heavy work for a shared 2-core machine: the
// limit only catches a hang, it is not a speed requirement
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const modelDir = join(repoRoot, "models", "demo");
const dataDir = join(repoRoot, "training", "data");

describe("demo model: parity with PyTorch", () => {
  it("matches the committed PyTorch fixture: prompt ids, every pixel, logits of both paths, greedy output, kept visual tokens", async () => {
    const fixture = readParityFixture(join(modelDir, "parity.json"));
    const results = await checkParity(modelDir, fixture, dataDir);
    expect(results).toHaveLength(fixture.cases.length);
    for (const r of results) expect(parityFailures(r).join("\n"), `${r.image} "${r.question}"`).toBe("");
    // every value of every picture was compared
    const S = 96;
    expect(results.map((r) => r.pixels.values)).toEqual(fixture.cases.map(() => 3 * S * S));
    // TTP and FastV, both scorers, three budgets, every case: kept exactly as PyTorch keeps them (ties counted)
    const s = selectionSummary(results);
    expect(fixture.budgets.map((b) => b.r)).toEqual([57, 34, 11]);
    expect(s.checked).toBe(fixture.cases.length * 2 * 2 * 3);
    console.log(
      `demo parity: ${results.length} cases, pixels at most ${Math.max(...results.map((r) => r.pixels.meanSteps)).toFixed(3)} 8-bit steps off on average; kept sets ${s.equal}/${s.checked} equal, ${s.ties} exact ties`,
    );
    // the fixture is not trivially empty: the model says something
    expect(results.some((r) => r.greedyIds.length >= 10)).toBe(true);
  });
});

describe("demo model: answers and TwigVLM", () => {
  let engine: LocalEngine;
  const scenes = readPictures(dataDir, "test", 12);
  beforeAll(async () => {
    engine = await LocalEngine.load(modelDir, { threads: 1 });
  });
  afterAll(() => engine?.close());

  /** The visual tokens `ttp-only` keeps at 88.9% pruned for one question about one scene. */
  async function keptAt88(scene: (typeof scenes)[number], question: string, scoreSource?: ScoreSource) {
    let indices: number[] = [];
    await engine.generate(
      await engine.plan({
        image: readFileSync(join(dataDir, scene.image)),
        messages: [{ role: "user", content: question }],
        maxTokens: 1,
        temperature: 0,
        topP: 1,
        stop: [],
        mode: "ttp-only",
        retainBudget: engine.info.visualTokens / 9,
        scoreSource,
      }),
      (e) => {
        if (e.type === "started") indices = e.keptVisualIndices;
      },
    );
    return indices;
  }

  async function ask(image: string | Buffer, question: string, mode: Mode, maxTokens: number) {
    let text = "";
    let stats: GenerateStats | undefined;
    await engine.generate(
      await engine.plan({
        image: typeof image === "string" ? readFileSync(join(dataDir, image)) : image,
        messages: [{ role: "user", content: question }],
        maxTokens,
        temperature: 0,
        topP: 1,
        stop: [],
        mode,
      }),
      (e) => {
        if (e.type === "delta") text += e.text;
        if (e.type === "finished") stats = e.stats;
      },
    );
    return { text, ids: engine.lastTrace?.result.outputIds ?? [], stats: stats as GenerateStats };
  }

  it("answers held-out short questions far better with the picture than with a blank one (it looks)", async () => {
    const blank = await sharp({
      create: { width: 96, height: 96, channels: 3, background: { r: 180, g: 180, b: 180 } },
    })
      .png()
      .toBuffer();
    let seeing = 0;
    let blind = 0;
    const questions = scenes.flatMap((s) => s.questions.map((q) => ({ ...q, image: s.image })));
    expect(questions).toHaveLength(12 * 3);
    for (const q of questions) {
      if (sameAnswer((await ask(q.image, q.question, "base", 8)).text, q.answer)) seeing++;
      if (sameAnswer((await ask(blank, q.question, "base", 8)).text, q.answer)) blind++;
    }
    console.log(`demo model, ${questions.length} held-out questions: ${seeing} right with the picture, ${blind} blank`);
    expect(seeing).toBeGreaterThanOrEqual(blind + Math.ceil(questions.length / 6));
  });

  it("twig mode gives the pruned model's greedy output and accepts drafts; ssd-only gives base's", async () => {
    let drafted = 0;
    let accepted = 0;
    for (const s of scenes.slice(0, 4)) {
      const twig = await ask(s.image, s.describe.prompt, "twig", 64);
      const pruned = await ask(s.image, s.describe.prompt, "ttp-only", 64);
      expect(twig.ids).toEqual(pruned.ids);
      expect(twig.stats.visualTokensKept).toBe(pruned.stats.visualTokensKept);
      expect(twig.stats.visualTokensKept).toBeLessThan(twig.stats.visualTokens);
      const ssd = await ask(s.image, s.describe.prompt, "ssd-only", 64);
      const base = await ask(s.image, s.describe.prompt, "base", 64);
      expect(ssd.ids).toEqual(base.ids);
      drafted += twig.stats.draftedTokens + ssd.stats.draftedTokens;
      accepted += twig.stats.acceptedTokens + ssd.stats.acceptedTokens;
    }
    // a trained twig agrees with the model far more often than a random one (near zero)
    expect(accepted / drafted).toBeGreaterThan(0.3);
  });

  it("eval's --score-source reaches the engine's pruning: all-text keeps other tokens than last-token", async () => {
    const kept = (scene: (typeof scenes)[number], scoreSource: ScoreSource) =>
      keptAt88(scene, scene.questions[0].question, scoreSource);
    const differ = [];
    for (const scene of scenes.slice(0, 3)) {
      const [last, all] = [await kept(scene, "last-token"), await kept(scene, "all-text")];
      expect(last.length).toBe(all.length);
      differ.push(last.join() !== all.join());
    }
    expect(differ).toContain(true);
    const result = await runEval(engine, scenes.slice(0, 1), dataDir, ["base", "ttp-only"], undefined, "all-text");
    expect(result.rows.map((r) => [r.label, r.scoreSource])).toEqual([
      ["base", undefined],
      ...["66.7", "77.8", "88.9"].map((p) => [`ttp-only @ ${p}%`, "all-text"]),
    ]);
  });

  it("scores by its twig config's ttp_score_source when a request names no scorer, as the eval reports", async () => {
    const twigConfig = JSON.parse(readFileSync(join(modelDir, "twig", "config.json"), "utf8"));
    const own = twigConfig.ttp_score_source ?? "last-token";
    const other = own === "all-text" ? "last-token" : "all-text";
    expect(engine.info.twig?.defaultScoreSource).toBe(own);
    const kept = (scoreSource?: ScoreSource) => keptAt88(scenes[0], scenes[0].describe.prompt, scoreSource);
    const [byDefault, byOwn, byOther] = [await kept(), await kept(own), await kept(other)];
    expect(byDefault).toEqual(byOwn);
    expect(byDefault).not.toEqual(byOther);
    const result = await runEval(engine, scenes.slice(0, 1), dataDir, ["base", "fastv"]);
    expect(result.scoreSource).toBe(own);
    expect(result.rows.slice(1).map((r) => r.scoreSource)).toEqual([own, own, own]);
  });
});
