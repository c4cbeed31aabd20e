import { describe, expect, it } from "vitest";
import { topR, visualScores } from "../../../gpu-service/src/engine/decoding/ttp.js";

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
