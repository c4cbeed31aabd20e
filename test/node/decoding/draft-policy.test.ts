/**
 * The batch's draft policy (batch/draft-policy.ts): the run-time fit recovers a fixed part and a
 * part per row; a round drafts long when runs cost mostly their fixed part (a small batch) and
 * not at all when they cost mostly per row (a large one); better acceptance drafts longer.
 */
import { describe, expect, it } from "vitest";
import {
  chooseDraftLength,
  expectedTokens,
  RunCost,
  type SegmentCosts,
} from "../../../gpu-service/src/engine/batch/draft-policy.js";

/** A segment's fixed ms per run on a lone sequence (the demo model's split: 2 lower, 3 twig, 22 mid, 8 top layers). */
const FIXED = { lower: 0.3, twig: 0.5, twigHead: 0.1, mid: 1.7, top: 0.7, head: 0.2 };

/** Costs where a run of each segment takes its FIXED ms plus `perRow` ms a row. */
function costs(perRow: number, fixedScale = 1): SegmentCosts {
  const make = (fixed: number) => {
    const c = new RunCost();
    for (const rows of [1, 4, 16, 2, 8, 32]) c.add(rows, fixed * fixedScale + perRow * rows);
    return c;
  };
  return {
    lower: make(FIXED.lower),
    twig: make(FIXED.twig),
    twigHead: make(FIXED.twigHead),
    mid: make(FIXED.mid),
    top: make(FIXED.top),
    head: make(FIXED.head),
  };
}

describe("draft policy", () => {
  it("fits a run's time as a fixed part plus a part per row", () => {
    const c = new RunCost();
    expect(c.predict(10)).toBe(0);
    for (const rows of [1, 3, 9, 27]) c.add(rows, 2 + 0.5 * rows);
    expect(c.predict(0)).toBeCloseTo(2, 6);
    expect(c.predict(100)).toBeCloseTo(52, 6);
    const same = new RunCost();
    for (let i = 0; i < 4; i++) same.add(4, 8);
    expect(same.predict(4)).toBeCloseTo(8, 6); // no slope to fit: still the time it measured
  });

  it("drafts the whole delta when runs cost their fixed part, none when they cost per row", () => {
    const alphas = [0.9, 0.9];
    expect(chooseDraftLength({ batch: 2, alphas, delta: 5 }, costs(0.0001))).toBe(5);
    expect(chooseDraftLength({ batch: 32, alphas: Array(32).fill(0.9), delta: 5 }, costs(1, 0.01))).toBe(0);
    expect(chooseDraftLength({ batch: 4, alphas: [], delta: 5 }, costs(0.0001))).toBe(0);
  });

  it("drafts longer the more drafts are accepted", () => {
    const c = costs(0.02);
    const n = [0.2, 0.5, 0.8, 0.95].map((alpha) =>
      chooseDraftLength({ batch: 4, alphas: Array(4).fill(alpha), delta: 5 }, c),
    );
    for (let i = 1; i < n.length; i++) expect(n[i]).toBeGreaterThanOrEqual(n[i - 1]);
    expect(n[3]).toBeGreaterThan(n[0]);
    expect(expectedTokens(0.5, 3)).toBeCloseTo(1.875, 12);
  });
});
