/**
 * The verification rules on a toy Markov "model" pair: the target's and the
 * draft's next-token logits depend on the previous token. Greedy SSD must
 * reproduce greedy decoding exactly; speculative sampling must reproduce the
 * target's distribution (chi-square test at significance 0.001).
 */
import { describe, expect, it } from "vitest";
import { argmax, distribution, Rng, sample, softmaxAt } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { verifyGreedy, verifySampled } from "../../../gpu-service/src/engine/decoding/speculative.js";

const V = 6;
function table(seed: number, sharp: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: V }, () => Array.from({ length: V }, () => (rng.next() - 0.5) * sharp));
}
const target = table(1, 4);
// a draft that is close to, but not the same as, the target
const draft = target.map((row, i) => row.map((x, j) => x + ((i * 7 + j * 3) % 5) * 0.4 - 0.8));

function ssdStep(prev: number, n: number, opts: { temperature: number; topP: number }, rng: Rng): number[] {
  const drafted: number[] = [];
  const q: Float64Array[] = [];
  let t = prev;
  for (let i = 0; i < n; i++) {
    const dist = distribution(draft[t], opts);
    t = opts.temperature > 0 ? sample(dist, rng) : argmax(draft[t]);
    drafted.push(t);
    q.push(dist);
  }
  const rows = [prev, ...drafted].map((tok) => target[tok]);
  const v = opts.temperature > 0 ? verifySampled(drafted, q, rows, opts, rng) : verifyGreedy(drafted, rows);
  return [...drafted.slice(0, v.accepted), v.bonus];
}

describe("speculative verification", () => {
  it("greedy SSD equals greedy decoding token for token", () => {
    for (let start = 0; start < V; start++) {
      const plain: number[] = [];
      let t = start;
      for (let i = 0; i < 40; i++) {
        t = argmax(target[t]);
        plain.push(t);
      }
      for (const n of [1, 3, 5]) {
        const out: number[] = [];
        let prev = start;
        while (out.length < 40) {
          const step = ssdStep(prev, n, { temperature: 0, topP: 1 }, new Rng(0));
          out.push(...step);
          prev = out[out.length - 1];
        }
        expect(out.slice(0, 40)).toEqual(plain);
      }
    }
  });

  it("accepts the longest matching prefix and returns the target's own next token", () => {
    const rows = [
      [0, 5, 0],
      [9, 0, 0],
      [0, 0, 7],
    ];
    expect(verifyGreedy([1, 0], rows)).toEqual({ accepted: 2, bonus: 2 });
    expect(verifyGreedy([1, 2], rows)).toEqual({ accepted: 1, bonus: 0 });
    expect(verifyGreedy([0, 0], rows)).toEqual({ accepted: 0, bonus: 1 });
  });

  for (const opts of [
    { temperature: 1, topP: 1 },
    { temperature: 0.7, topP: 0.8 },
  ]) {
    it(`speculative sampling draws the first two tokens from the target's distribution (T=${opts.temperature}, top-p=${opts.topP})`, () => {
      const start = 2;
      const trials = 30000;
      const rng = new Rng(12345);
      const counts = new Float64Array(V * V);
      for (let s = 0; s < trials; s++) {
        const out: number[] = [];
        let prev = start;
        while (out.length < 2) {
          out.push(...ssdStep(prev, 3, opts, rng));
          prev = out[out.length - 1];
        }
        counts[out[0] * V + out[1]]++;
      }
      const p1 = distribution(target[start], opts);
      let chi2 = 0;
      let df = -1;
      for (let a = 0; a < V; a++) {
        const p2 = distribution(target[a], opts);
        for (let b = 0; b < V; b++) {
          const expected = p1[a] * p2[b] * trials;
          if (expected === 0) {
            expect(counts[a * V + b]).toBe(0); // top-p removed it: it must never appear
            continue;
          }
          chi2 += (counts[a * V + b] - expected) ** 2 / expected;
          df++;
        }
      }
      // chi-square critical value at significance 0.001 (Wilson-Hilferty approximation)
      const z = 3.0902;
      const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
      expect(chi2).toBeLessThan(critical);
    });
  }

  it("the sampling test has power: drawing from the draft alone fails it", () => {
    const opts = { temperature: 1, topP: 1 };
    const trials = 30000;
    const rng = new Rng(7);
    const counts = new Float64Array(V);
    for (let s = 0; s < trials; s++) counts[sample(distribution(draft[2], opts), rng)]++;
    const p = distribution(target[2], opts);
    let chi2 = 0;
    for (let a = 0; a < V; a++) chi2 += (counts[a] - p[a] * trials) ** 2 / (p[a] * trials);
    expect(chi2).toBeGreaterThan(20.52); // df=5 critical value at 0.001
  });

  it("softmaxAt is one entry of the temperature-1 softmax", () => {
    const logits = [2, -1, 0.5, 3, 3];
    const full = distribution(logits, { temperature: 1, topP: 1 });
    logits.forEach((_, i) => {
      expect(softmaxAt(logits, i)).toBeCloseTo(full[i], 12);
    });
    expect(softmaxAt([1000, 0], 0)).toBeCloseTo(1, 12); // no overflow
  });
});
