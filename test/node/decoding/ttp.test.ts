/**
 * The engine's TTP scoring and top-R against the test-only reference
 * (test/reference/ttp.ts, written again from TWIGVLM.md): hand-made cases, then
 * random attention maps with ties planted at the R-th boundary.
 */
import { describe, expect, it } from "vitest";
import { SCORE_SOURCES, topR, visualScores } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { referenceTopR, referenceVisualScores, TestRng, tieAtBoundary } from "../../reference/index.js";

describe("TTP scoring", () => {
  // 2 heads, 3 queries (positions 5,6,7), 8 keys; visual tokens are keys 1..4
  const heads = 2;
  const queries = 3;
  const keys = 8;
  const probs = new Float32Array(heads * queries * keys);
  const set = (h: number, q: number, k: number, v: number) => {
    probs[(h * queries + q) * keys + k] = v;
  };
  // last query row: head 0 likes visual 2 (key 3), head 1 likes visual 0 (key 1)
  set(0, 2, 3, 0.6);
  set(1, 2, 1, 0.4);
  set(1, 2, 3, 0.1);
  // earlier rows favour visual 3 (key 4)
  set(0, 0, 4, 0.9);
  set(1, 1, 4, 0.9);

  it("scores by the last prompt token, averaged over heads", () => {
    const s = visualScores(probs, { heads, queries, keys }, [5, 6, 7], 1, 4, "last-token");
    expect(Array.from(s)).toEqual([0.2, 0, 0.35, 0].map((x) => expect.closeTo(x, 6)));
  });

  it("sums over all text queries in the paper's variant", () => {
    const s = visualScores(probs, { heads, queries, keys }, [5, 6, 7], 1, 4, "all-text");
    expect(s[3]).toBeCloseTo(0.9, 6);
    expect(s[2]).toBeCloseTo(0.35, 6);
  });

  it("keeps the top R in original order, ties to the lower index", () => {
    expect(topR([0.1, 0.5, 0.3, 0.5, 0.0], 3)).toEqual([1, 2, 3]);
    expect(topR([0.2, 0.2, 0.2], 2)).toEqual([0, 1]);
    expect(topR([1, 2], 0)).toEqual([]);
    expect(topR([1, 2], 5)).toEqual([0, 1]);
  });
});

describe("TTP against the reference on random attention", () => {
  /** A causal attention map over S prompt positions: [heads][query][key], each row a distribution. */
  function attention(rng: TestRng, heads: number, S: number): number[][][] {
    return Array.from({ length: heads }, () =>
      Array.from({ length: S }, (_, q) => {
        const w = Array.from({ length: S }, (_, k) => (k <= q ? rng.next() ** 3 : 0));
        const z = w.reduce((a, b) => a + b, 0);
        return w.map((x) => x / z);
      }),
    );
  }

  it("gives the reference's scores and kept set for every scorer, layout and R", () => {
    const rng = new TestRng(2024);
    let checked = 0;
    for (let trial = 0; trial < 60; trial++) {
      const heads = 1 + (trial % 4);
      const numVisual = 6 + (trial % 11);
      const before = 1 + (trial % 3);
      const after = 1 + (trial % 5);
      const S = before + numVisual + after;
      const probs = attention(rng, heads, S);
      const flat = new Float32Array(probs.flat(2));
      // the reference is fed the same float32 values the engine sees
      const asF32 = probs.map((h, hi) => h.map((row, q) => row.map((_, k) => flat[(hi * S + q) * S + k])));
      for (const source of SCORE_SOURCES) {
        const positions = [...Array(S).keys()];
        const engine = visualScores(flat, { heads, queries: S, keys: S }, positions, before, numVisual, source);
        const want = referenceVisualScores(asF32, before, numVisual, source);
        expect(Array.from(engine)).toEqual(want.map((x) => expect.closeTo(x, 12)));
        for (let r = 0; r <= numVisual; r++) {
          expect(topR(want, r), `trial ${trial} ${source} R=${r}`).toEqual(referenceTopR(want, r));
          checked++;
        }
      }
    }
    expect(checked).toBe(2 * (60 * 6 + [...Array(60).keys()].reduce((a, t) => a + 1 + (t % 11), 0)));
  });

  it("breaks exact ties at the boundary toward the lower index, as the reference does", () => {
    const rng = new TestRng(7);
    let ties = 0;
    for (let trial = 0; trial < 200; trial++) {
      const n = 5 + (trial % 20);
      const r = 1 + (trial % (n - 1));
      // few distinct values: ties are everywhere, also across the R-th place
      const scores = Array.from({ length: n }, () => Math.floor(rng.next() * 4) / 4);
      if (tieAtBoundary(scores, r)) ties++;
      expect(topR(scores, r)).toEqual(referenceTopR(scores, r));
    }
    expect(ties).toBeGreaterThan(50);
  });
});
