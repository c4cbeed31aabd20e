/**
 * Every pruner (gpu-service/src/engine/pruning/) against the same cases: what the registry promises
 * of any of them (N finite scores, R kept indices ascending and distinct, the same answer for the same
 * input, no reading of what it does not declare), then what each scores by, against the test-only
 * reference (test/reference/ttp.ts) where it scores by attention.
 */
import { describe, expect, it } from "vitest";
import { SCORE_SOURCES } from "../../../gpu-service/src/engine/decoding/ttp.js";
import { InvariantError } from "../../../gpu-service/src/engine/errors.js";
import type { PruneInput } from "../../../gpu-service/src/engine/pruning/pruner.js";
import {
  keptVisualIndices,
  PRUNERS,
  type Pruning,
  scoresByAttention,
} from "../../../gpu-service/src/engine/pruning/registry.js";
import { referenceTopR, referenceVisualScores, TestRng } from "../../reference/index.js";

const NAMES = Object.keys(PRUNERS) as Pruning[];

/** A causal attention map [heads][query][key] over S positions, each row a distribution, and its float32 copy. */
function attention(rng: TestRng, heads: number, S: number): { nested: number[][][]; flat: Float32Array } {
  const nested = Array.from({ length: heads }, () =>
    Array.from({ length: S }, (_, q) => {
      const w = Array.from({ length: S }, (_, k) => (k <= q ? rng.next() ** 3 : 0));
      const z = w.reduce((a, b) => a + b, 0);
      return w.map((x) => x / z);
    }),
  );
  const flat = new Float32Array(nested.flat(2));
  // the reference reads the same float32 values the engine does
  const asF32 = nested.map((h, hi) => h.map((row, q) => row.map((_, k) => flat[(hi * S + q) * S + k])));
  return { nested: asF32, flat };
}

/** A prompt of `before` text rows, N visual rows and `after` text rows, with both attention maps and CLS scores. */
function input(seed: number, o: { heads?: number; before?: number; numVisual?: number; after?: number } = {}) {
  const { heads = 3, before = 2, numVisual = 12, after = 4 } = o;
  const rng = new TestRng(seed);
  const S = before + numVisual + after;
  const lower = attention(rng, heads, S);
  const twig = attention(rng, heads, S);
  const cls = Float32Array.from({ length: numVisual }, () => rng.next());
  const x: PruneInput = {
    prompt: { positions: [...Array(S).keys()], visualStart: before, numVisual },
    lower: { attentionProbs: lower.flat },
    twig: { attentionProbs: twig.flat },
    heads,
    image: { clsAttention: cls },
    source: "last-token",
    seed,
  };
  return { x, lower: lower.nested, twig: twig.nested, cls };
}

describe("every pruner", () => {
  it("gives N finite scores and keeps R distinct indices, ascending, for every R", () => {
    for (const name of NAMES)
      for (const seed of [1, 2, 3]) {
        const { x } = input(seed, { numVisual: 5 + seed * 3 });
        const N = x.prompt.numVisual;
        const scores = Array.from(PRUNERS[name].scores(x));
        expect(scores, name).toHaveLength(N);
        expect(scores.every(Number.isFinite), name).toBe(true);
        for (let r = 0; r <= N; r++) {
          const kept = keptVisualIndices(name, x, r);
          expect(kept, `${name} R=${r}`).toEqual(referenceTopR(scores, r));
          expect(new Set(kept).size).toBe(r);
          expect(kept.every((v, i) => v >= 0 && v < N && (i === 0 || kept[i - 1] < v))).toBe(true);
        }
      }
  });

  it("gives the same scores for the same input", () => {
    for (const name of NAMES) expect(PRUNERS[name].scores(input(5).x), name).toEqual(PRUNERS[name].scores(input(5).x));
  });

  it("reads only what it declares: the other layer's attention, when changed, changes nothing", () => {
    for (const name of NAMES) {
      const { x } = input(6);
      const other = input(7).x;
      const { reads } = PRUNERS[name];
      const swapped: PruneInput = {
        ...x,
        lower: reads === "lower" ? x.lower : other.lower,
        twig: reads === "twig" ? x.twig : undefined,
      };
      expect(Array.from(PRUNERS[name].scores(swapped)), name).toEqual(Array.from(PRUNERS[name].scores(x)));
      expect(scoresByAttention(name), name).toBe(reads !== undefined);
    }
  });
});

describe("each pruner's score", () => {
  it("twig (TTP) and fastv: the reference's score of the twig's last layer and of base layer K, for each scorer", () => {
    for (const source of SCORE_SOURCES)
      for (const seed of [11, 12, 13, 14]) {
        const { x, lower, twig } = input(seed, { heads: 1 + (seed % 4), before: seed % 3, after: 1 + (seed % 5) });
        const { visualStart, numVisual } = x.prompt;
        const close = (want: number[]) => want.map((v) => expect.closeTo(v, 12));
        const scored = { ...x, source };
        expect(Array.from(PRUNERS.twig.scores(scored))).toEqual(
          close(referenceVisualScores(twig, visualStart, numVisual, source)),
        );
        expect(Array.from(PRUNERS.fastv.scores(scored))).toEqual(
          close(referenceVisualScores(lower, visualStart, numVisual, source)),
        );
      }
  });

  it("twig and fastv refuse to score without their attention map or a scorer", () => {
    const { x } = input(20);
    expect(() => PRUNERS.twig.scores({ ...x, twig: undefined })).toThrow(InvariantError);
    expect(() => PRUNERS.fastv.scores({ ...x, lower: {} })).toThrow(InvariantError);
    expect(() => PRUNERS.twig.scores({ ...x, source: null })).toThrow(InvariantError);
  });

  it("visionzip: the vision tower's CLS attention, as it is", () => {
    const { x, cls } = input(21);
    expect(PRUNERS.visionzip.scores(x)).toBe(cls);
  });

  it("random: a draw per visual token from the seed, another for another seed", () => {
    const { x } = input(22, { numVisual: 40 });
    const a = Array.from(PRUNERS.random.scores(x));
    expect(a.every((v) => v >= 0 && v < 1)).toBe(true);
    expect(new Set(a).size).toBe(40);
    expect(Array.from(PRUNERS.random.scores({ ...x, seed: x.seed + 1 }))).not.toEqual(a);
    // the kept set moves with the seed too: over 20 seeds, R = 10 of 40 keeps more than 10 distinct tokens in all
    const seen = new Set<number>();
    for (let seed = 0; seed < 20; seed++) for (const v of keptVisualIndices("random", { ...x, seed }, 10)) seen.add(v);
    expect(seen.size).toBeGreaterThan(30);
  });

  it("none: keeps every visual token", () => {
    const { x } = input(23);
    expect(keptVisualIndices("none", x, x.prompt.numVisual)).toEqual([...Array(x.prompt.numVisual).keys()]);
  });
});
