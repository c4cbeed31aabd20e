/**
 * Checks an evaluation against an earlier one (the numbers committed in a model
 * card): the same scenes through the same model give the same greedy answers, so
 * accuracy, description scores and acceptance must match exactly; speed ratios
 * are measured and vary with the machine's load, so they are shown side by side
 * and judged against a tolerance.
 */
import type { EvalResult, EvalRow } from "./run.js";

export interface Comparison {
  /** Markdown table: one row per configuration, committed -> now. */
  table: string;
  /** Configurations whose deterministic numbers differ (accuracy, description scores, acceptance). */
  accuracyMismatches: string[];
  /** Configurations whose RelSpd (long) moved by more than the tolerance. */
  speedOutliers: string[];
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const ratio = (x: number) => `${x.toFixed(2)}x`;

function same(a: number, b: number): boolean {
  return Math.abs(a - b) <= 1e-9;
}

/** A score that one of the runs may predate: compared only when both have it. */
function optionalEqual(a: number | undefined, b: number | undefined): boolean {
  return a === undefined || b === undefined || same(a, b);
}

function deterministicEqual(a: EvalRow, b: EvalRow): boolean {
  return (
    a.shortCorrect === b.shortCorrect &&
    a.shortTotal === b.shortTotal &&
    same(a.descriptionPrecision, b.descriptionPrecision) &&
    same(a.descriptionRecall, b.descriptionRecall) &&
    optionalEqual(a.descriptionMatchedPrecision, b.descriptionMatchedPrecision) &&
    optionalEqual(a.descriptionMatchedRecall, b.descriptionMatchedRecall) &&
    optionalEqual(a.descriptionObjectsPrecision, b.descriptionObjectsPrecision) &&
    optionalEqual(a.descriptionObjectsRecall, b.descriptionObjectsRecall) &&
    same(a.acceptanceRate, b.acceptanceRate) &&
    same(a.meanAcceptedLength, b.meanAcceptedLength) &&
    (a.losslessMismatches ?? 0) === (b.losslessMismatches ?? 0)
  );
}

/**
 * Compares `now` with `committed` row by row (matched by label).
 * `speedTolerance` is relative: 0.25 flags a RelSpd that moved by more than a quarter.
 *
 * @example
 * const c = compareEvals(JSON.parse(readFileSync("models/demo/eval/eval.json", "utf8")), result);
 * if (c.accuracyMismatches.length) console.error("not reproduced:", c.accuracyMismatches);
 */
export function compareEvals(committed: EvalResult, now: EvalResult, speedTolerance = 0.25): Comparison {
  if (committed.scenes !== now.scenes || committed.shortQuestions !== now.shortQuestions)
    throw new RangeError(
      `the runs cover different scenes (${committed.scenes} scenes / ${committed.shortQuestions} questions committed, ${now.scenes} / ${now.shortQuestions} now): run with the same --split and --limit`,
    );
  if (committed.scoreSource && now.scoreSource && committed.scoreSource !== now.scoreSource)
    throw new RangeError(
      `the runs scored visual tokens differently (${committed.scoreSource} committed, ${now.scoreSource} now): run with --score-source ${committed.scoreSource}`,
    );
  const accuracyMismatches: string[] = [];
  const speedOutliers: string[] = [];
  const lines = [
    "| mode | short accuracy (committed -> now) | description P / R | acceptance | RelSpd long | RelSpd short | deterministic numbers |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const c of committed.rows) {
    const n = now.rows.find((r) => r.label === c.label);
    if (!n) {
      accuracyMismatches.push(c.label);
      lines.push(`| ${c.label} | missing from this run | | | | | differ |`);
      continue;
    }
    const equal = deterministicEqual(c, n);
    if (!equal) accuracyMismatches.push(c.label);
    const moved = Math.abs(n.relSpdLong - c.relSpdLong) / Math.max(c.relSpdLong, 1e-9);
    if (moved > speedTolerance) speedOutliers.push(c.label);
    lines.push(
      `| ${c.label} | ${pct(c.shortAccuracy)} -> ${pct(n.shortAccuracy)} | ${pct(c.descriptionPrecision)} / ${pct(c.descriptionRecall)} -> ${pct(n.descriptionPrecision)} / ${pct(n.descriptionRecall)} | ${c.acceptanceRate ? `${pct(c.acceptanceRate)} -> ${pct(n.acceptanceRate)}` : "–"} | ${ratio(c.relSpdLong)} -> ${ratio(n.relSpdLong)} | ${ratio(c.relSpdShort)} -> ${ratio(n.relSpdShort)} | ${equal ? "equal" : "differ"} |`,
    );
  }
  for (const n of now.rows)
    if (!committed.rows.some((c) => c.label === n.label))
      lines.push(`| ${n.label} | not in the committed run | | | | | |`);
  return { table: `${lines.join("\n")}\n`, accuracyMismatches, speedOutliers };
}
