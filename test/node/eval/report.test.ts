import { describe, expect, it } from "vitest";
import { descriptionTable, kindTable } from "../../../gpu-service/tools/eval/report.js";
import type { EvalResult, EvalRow } from "../../../gpu-service/tools/eval/run.js";
import { questionKind } from "../../../gpu-service/tools/eval/scene-answers.js";

describe("questionKind", () => {
  it("keeps a question's frame and folds what it names into one placeholder", () => {
    expect(questionKind("what colour is the circle ?")).toBe("what colour is the _ ?");
    expect(questionKind("where is the red cross ?")).toBe("where is the _ ?");
    expect(questionKind("what is at the top left ?")).toBe("what is at the _ ?");
    expect(questionKind("what is at the top ?")).toBe("what is at the _ ?");
    expect(questionKind("how many objects are there ?")).toBe("how many objects are there ?");
    expect(questionKind("how many blue objects are there ?")).toBe("how many _ objects are there ?");
  });

  it("splits 'what is at' by whether its answer is an object or nothing, given the answer", () => {
    expect(questionKind("what is at the top left ?", "a small red circle")).toBe("what is at the _ ? (an object)");
    expect(questionKind("what is at the center ?", "nothing")).toBe("what is at the _ ? (nothing)");
    expect(questionKind("where is the red cross ?", "left")).toBe("where is the _ ?");
  });
});

describe("kindTable", () => {
  const row = (label: string, mode: EvalRow["mode"], pruned: number | undefined, byKind: EvalRow["shortByKind"]) =>
    ({ label, mode, pruned, shortByKind: byKind }) as EvalRow;
  const result = {
    rows: [
      row("base", "base", undefined, { "where is the _ ?": { correct: 3, total: 4 } }),
      row("random @ 66.7%", "random", 2 / 3, { "where is the _ ?": { correct: 1, total: 4 } }),
      row("random @ 88.9%", "random", 8 / 9, { "where is the _ ?": { correct: 2, total: 4 } }),
    ],
  } as EvalResult;

  it("has a row per kind and a column for base and each picked configuration", () => {
    const t = kindTable(result);
    expect(t).toContain("| question kind | base | random @ 88.9% |");
    expect(t).toContain("| where is the _ ? | 75.0% (3/4) | 50.0% (2/4) |");
    expect(t).not.toContain("66.7");
  });

  it("is empty for a run written before kinds were counted", () => {
    expect(kindTable({ rows: [row("base", "base", undefined, undefined)] } as EvalResult)).toBe("");
  });
});

describe("descriptionTable", () => {
  const row = (label: string, over: Partial<EvalRow>) =>
    ({ label, mode: "base", descriptionPrecision: 0.5, descriptionRecall: 0.25, ...over }) as EvalRow;

  it("gives the three scores of each configuration", () => {
    const t = descriptionTable({
      rows: [
        row("base", {
          descriptionMatchedPrecision: 0.75,
          descriptionMatchedRecall: 0.5,
          descriptionObjectsPrecision: 0.2,
          descriptionObjectsRecall: 0.1,
        }),
      ],
    } as EvalResult);
    expect(t).toContain("| base | 50.0% / 25.0% | 75.0% / 50.0% | 20.0% / 10.0% |");
  });

  it("is empty for a run written before they were measured", () => {
    expect(descriptionTable({ rows: [row("base", {})] } as EvalResult)).toBe("");
  });
});
