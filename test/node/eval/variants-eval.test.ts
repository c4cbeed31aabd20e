/**
 * `npm run twig -- eval` on LLaVA-NeXT and LLaVA-NeXT-Video checkpoints written by make-tiny (24 layers, random
 * weights, so the answers are noise: this checks the plumbing), as a person runs it, on held-out splits in
 * the variants' format (training/gen_data.py --world next|video: pictures of their own sizes; clips as
 * lists of frames with their objects' events): every mode at the three pruned shares, each request's
 * R-bar its own N's share, the split chosen by the model's architecture, the same tables, and SSD lossless.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { budgetForPrunedFraction, keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { type EvalResult, PRUNED_FRACTIONS } from "../../../gpu-service/tools/eval/run.js";
import { photoPng } from "../../support/clips.js";
import { repoRoot } from "../../support/gpu-service.js";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "twig-eval-variants-"));
const data = join(dir, "data");
const cli = (...args: string[]) =>
  run(process.execPath, ["--import", "tsx", join(repoRoot, "gpu-service/tools/cli/main.ts"), ...args], {
    cwd: repoRoot,
    maxBuffer: 1 << 24,
  });

const object = (cell: number, kind: string, colour: string, size: string) => ({ cell, kind, colour, size });

beforeAll(async () => {
  // 24 layers: with K = 2 every budget of the paper fits (R-bar down to N/9 needs L > 9K)
  await cli("make-tiny", "--out", join(dir, "next"), "--arch", "next", "--layers", "24", "--seed", "41");
  await cli("make-tiny", "--out", join(dir, "video"), "--arch", "next-video", "--layers", "24", "--seed", "42");
  mkdirSync(join(data, "next-test"), { recursive: true });
  const pictures = [
    { size: [90, 50], objects: [object(4, "circle", "red", "large")] },
    { size: [44, 90], objects: [object(0, "square", "blue", "small"), object(8, "cross", "green", "large")] },
  ];
  const next = [];
  for (const [i, p] of pictures.entries()) {
    writeFileSync(join(data, "next-test", `${i}.png`), await photoPng(p.size[0], p.size[1], i));
    next.push({
      id: `next-test-${i}`,
      image: `next-test/${i}.png`,
      size: p.size,
      objects: p.objects,
      questions: [{ question: "what colour is the circle ?", answer: "red" }],
      describe: { prompt: "describe the picture .", reference: "there is one object ." },
    });
  }
  writeFileSync(join(data, "next-test.jsonl"), next.map((r) => JSON.stringify(r)).join("\n"));
  const clips = [];
  for (const [i, frames] of [4, 6].entries()) {
    const names = [];
    mkdirSync(join(data, "video-test", String(i)), { recursive: true });
    for (let f = 0; f < frames; f++) {
      names.push(`video-test/${i}/${f}.png`);
      writeFileSync(join(data, names[f]), await photoPng(40, 30, f));
    }
    clips.push({
      id: `video-test-${i}`,
      frames: names,
      objects: [
        { ...object(2, "circle", "red", "small"), start: 0, end: frames, move: [1, 5], recolour: null },
        { ...object(6, "square", "blue", "large"), start: 1, end: frames, move: null, recolour: null },
      ],
      questions: [
        { question: "which object moves ?", answer: "a small red circle" },
        { question: "how many objects appear ?", answer: "one" },
      ],
      describe: { prompt: "describe the video .", reference: "in the first frame there is one object ." },
    });
  }
  writeFileSync(join(data, "video-test.jsonl"), clips.map((r) => JSON.stringify(r)).join("\n"));
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MODES = "base,ssd-only,twig,ttp-only,fastv,random,visionzip";

describe("eval on the variants' layouts", () => {
  const cases = [
    { arch: "next", split: "next-test", questions: 2, N: [52, 56] },
    { arch: "video", split: "video-test", questions: 4, N: [16, 24] },
  ];
  let checked = 0;
  for (const c of cases) {
    it(`${c.arch}: every mode at 66.7/77.8/88.9% pruned on ${c.split}, the tables written, SSD lossless`, async () => {
      const out = join(dir, `out-${c.arch}`);
      const { stdout } = await cli(
        "eval",
        "--model",
        join(dir, c.arch),
        "--data",
        data,
        "--modes",
        MODES,
        "--out",
        out,
      );
      const result = JSON.parse(readFileSync(join(out, "eval.json"), "utf8")) as EvalResult;
      expect(result.split).toBe(c.split);
      expect([result.scenes, result.shortQuestions]).toEqual([2, c.questions]);
      // N is each request's: the mean over the pictures or clips, each asked its questions and a description
      const perScene = c.N.flatMap((n) => Array(c.questions / 2 + 1).fill(n));
      expect(result.visualTokens).toBeCloseTo(perScene.reduce((a, b) => a + b, 0) / perScene.length, 1);
      expect(result.rows.map((r) => r.label)).toEqual([
        "base",
        "ssd-only",
        ...PRUNED_FRACTIONS.flatMap((f) =>
          ["twig", "ttp-only", "fastv", "random", "visionzip"].map((m) => `${m} @ ${(f * 100).toFixed(1)}%`),
        ),
      ]);
      for (const r of result.rows) {
        if (r.pruned === undefined) expect(r.visualTokensKept).toBeCloseTo(result.visualTokens, 6);
        else {
          expect(r.retainBudget).toBeUndefined(); // each request's own: R-bar = round(N (1 - pruned)), R from it
          const pruned = r.pruned;
          const R = perScene.map((N) =>
            keptTokensForBudget(budgetForPrunedFraction(pruned, N), {
              visualTokens: N,
              numLayers: 24,
              k: 2,
              finalWipeLayer: 18,
            }),
          );
          expect(r.visualTokensKept).toBeCloseTo(R.reduce((a, b) => a + b, 0) / R.length, 9);
        }
        if (r.mode === "twig" || r.mode === "ssd-only") expect(r.losslessMismatches).toBe(0);
        expect(r.shortTotal).toBe(c.questions);
      }
      // kept shrinks with the budget
      const ttp = result.rows.filter((r) => r.mode === "ttp-only").map((r) => r.visualTokensKept);
      expect(ttp[0]).toBeGreaterThan(ttp[2]);
      expect(stdout).toMatch(/\| twig @ 88\.9% \|/);
      expect(readFileSync(join(out, "eval.md"), "utf8")).toMatch(/## Descriptions scored three ways/);
      checked++;
    }, 600_000);
  }
  it("ran both", () => expect(checked).toBe(cases.length));
});
