import { describe, expect, it } from "vitest";
import type { ScoreSource } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { compareEvals } from "../../../gpu-service/tools/eval/compare.js";
import type { EvalResult, EvalRow } from "../../../gpu-service/tools/eval/run.js";

function row(label: string, over: Partial<EvalRow> = {}): EvalRow {
  return {
    mode: "base",
    label,
    shortAccuracy: 0.9,
    shortCorrect: 27,
    shortTotal: 30,
    descriptionPrecision: 0.8,
    descriptionRecall: 0.7,
    relAcc: 1,
    relAccDescription: 1,
    relSpdShort: 1,
    relSpdLong: 1.6,
    tokensPerSecondLong: 100,
    acceptanceRate: 0.8,
    meanAcceptedLength: 2,
    visualTokensKept: 144,
    ...over,
  };
}

function result(rows: EvalRow[], scenes = 10): EvalResult {
  return { model: "m", split: "test", scenes, shortQuestions: 30, visualTokens: 144, rows, seconds: 1 };
}

describe("compareEvals", () => {
  it("accepts equal deterministic numbers whatever the speed did, and flags a large speed move", () => {
    const c = compareEvals(
      result([row("base"), row("twig")]),
      result([row("base", { relSpdLong: 1.7 }), row("twig", { relSpdLong: 2.4 })]),
    );
    expect(c.accuracyMismatches).toEqual([]);
    expect(c.speedOutliers).toEqual(["twig"]);
    expect(c.table).toContain("| twig | 90.0% -> 90.0% |");
  });

  it("reports a changed accuracy, description score, acceptance or a missing row", () => {
    const committed = result([row("base"), row("a"), row("b"), row("c"), row("gone")]);
    const now = result([
      row("base"),
      row("a", { shortCorrect: 26, shortAccuracy: 26 / 30 }),
      row("b", { descriptionRecall: 0.71 }),
      row("c", { acceptanceRate: 0.79 }),
    ]);
    expect(compareEvals(committed, now).accuracyMismatches).toEqual(["a", "b", "c", "gone"]);
  });

  it("compares the extra description scores only when both runs have them", () => {
    const committed = result([
      row("old"),
      row("same", { descriptionObjectsRecall: 0.5 }),
      row("moved", { descriptionMatchedPrecision: 0.8 }),
    ]);
    const now = result([
      row("old", { descriptionObjectsRecall: 0.6 }),
      row("same", { descriptionObjectsRecall: 0.5 }),
      row("moved", { descriptionMatchedPrecision: 0.81 }),
    ]);
    expect(compareEvals(committed, now).accuracyMismatches).toEqual(["moved"]);
  });

  it("refuses runs over different scenes", () => {
    expect(() => compareEvals(result([row("base")], 10), result([row("base")], 50))).toThrow(/--limit/);
  });

  it("refuses runs whose pruning scored visual tokens differently, and names the option that matches", () => {
    const scored = (scoreSource?: ScoreSource) => ({ ...result([row("base")]), scoreSource });
    expect(() => compareEvals(scored("all-text"), scored("last-token"))).toThrow(/--score-source all-text/);
    expect(compareEvals(scored("all-text"), scored("all-text")).accuracyMismatches).toEqual([]);
    expect(compareEvals(scored(), scored("all-text")).accuracyMismatches).toEqual([]); // a run that predates the field
  });
});
