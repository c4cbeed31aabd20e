/**
 * The verification rules on a toy Markov "model" pair: the target's and the
 * draft's next-token logits depend on the previous token. Greedy SSD must
 * reproduce greedy decoding exactly; speculative sampling must follow the
 * acceptance rule and reproduce the target's distribution (chi-square tests at
 * significance 0.001). Every expected probability comes from the test-only
 * reference (test/reference/sampling.ts), not from the module under test.
 */
import { describe, expect, it } from "vitest";
import { argmax, distribution, Rng, sample, softmaxAt } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { proposeDraft, verifyGreedy, verifySampled } from "../../../gpu-service/src/engine/decoding/speculative.js";
import { chiSquare, referenceDistribution, speculativeOutcome, TestRng } from "../../reference/index.js";

const V = 6;
function table(seed: number, sharp: number): number[][] {
  const rng = new TestRng(seed);
  return Array.from({ length: V }, () => Array.from({ length: V }, () => (rng.next() - 0.5) * sharp));
}
const target = table(1, 4);
// a draft that is close to, but not the same as, the target
const draft = target.map((row, i) => row.map((x, j) => x + ((i * 7 + j * 3) % 5) * 0.4 - 0.8));
const SETTINGS = [
  { temperature: 1, topP: 1 },
  { temperature: 0.7, topP: 0.8 },
];

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

describe("the sampling distribution", () => {
  it("equals the reference's softmax with temperature and top-p on random rows, ties included", () => {
    const rng = new TestRng(99);
    let checked = 0;
    for (let trial = 0; trial < 300; trial++) {
      const n = 2 + (trial % 30);
      // a third of the rows have repeated logits, so the nucleus boundary falls inside ties
      const logits = Array.from({ length: n }, () =>
        trial % 3 === 0 ? Math.floor(rng.next() * 4) : (rng.next() - 0.5) * 12,
      );
      for (const temperature of [0, 0.3, 1, 2.5]) {
        for (const topP of [0.05, 0.5, 0.9, 1]) {
          const got = Array.from(distribution(logits, { temperature, topP }));
          const want = referenceDistribution(logits, temperature, topP);
          expect(got, `row ${trial} T=${temperature} top-p=${topP}`).toEqual(want.map((p) => expect.closeTo(p, 12)));
          checked++;
        }
      }
    }
    expect(checked).toBe(300 * 16);
  });

  it("draws tokens with the reference's probabilities (chi-square)", () => {
    const rng = new Rng(4242);
    let tested = 0;
    for (const opts of SETTINGS) {
      const p = referenceDistribution(target[3], opts.temperature, opts.topP);
      const counts = new Array(V).fill(0);
      for (let s = 0; s < 20000; s++) counts[sample(distribution(target[3], opts), rng)]++;
      const { chi2, critical, impossible } = chiSquare(counts, p);
      expect(impossible).toBe(0);
      expect(chi2).toBeLessThan(critical);
      tested++;
    }
    expect(tested).toBe(SETTINGS.length);
  });
});

describe("draft proposal", () => {
  it("greedy: the draft row's argmax, with its softmax probability at temperature 1 as the confidence", () => {
    for (let prev = 0; prev < V; prev++) {
      const row = draft[prev];
      const want = referenceDistribution(row, 1, 1);
      const d = proposeDraft(row, { temperature: 0, topP: 1 }, new Rng(1));
      expect(d.token).toBe(want.indexOf(Math.max(...want)));
      expect(d.p).toBeCloseTo(want[d.token], 12);
      expect(d.q).toBeUndefined();
    }
  });

  for (const opts of SETTINGS) {
    it(`sampling: a draw from q, the reference's distribution, with q(d) as the confidence (T=${opts.temperature}, top-p=${opts.topP})`, () => {
      const q = referenceDistribution(draft[2], opts.temperature, opts.topP);
      const rng = new Rng(99);
      const counts = new Array(V).fill(0);
      for (let s = 0; s < 20000; s++) {
        const d = proposeDraft(draft[2], opts, rng);
        expect(Array.from(d.q ?? [])).toEqual(q.map((x) => expect.closeTo(x, 12)));
        expect(d.p).toBe(d.q?.[d.token]);
        counts[d.token]++;
      }
      const { chi2, critical, impossible } = chiSquare(counts, q);
      expect(impossible).toBe(0);
      expect(chi2).toBeLessThan(critical);
    });
  }
});

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

  for (const opts of SETTINGS) {
    it(`accepts and resamples one draft by the rule: min(1, p/q), then the residual max(0, p - q) (T=${opts.temperature}, top-p=${opts.topP})`, () => {
      // for each previous token: the joint outcome (accepted or not, emitted token) against the reference's
      const rng = new Rng(777);
      const drafts = new TestRng(31);
      let rejected = 0;
      for (let prev = 0; prev < V; prev++) {
        const p = referenceDistribution(target[prev], opts.temperature, opts.topP);
        const q = referenceDistribution(draft[prev], opts.temperature, opts.topP);
        const want = speculativeOutcome(p, q);
        const counts = new Array(2 * V).fill(0);
        const trials = 12000;
        for (let s = 0; s < trials; s++) {
          const d = drafts.draw(q);
          const v = verifySampled([d], [Float64Array.from(q)], [target[prev], target[d]], opts, rng);
          if (v.accepted === 1) counts[d]++;
          else counts[V + v.bonus]++;
        }
        rejected += counts.slice(V).reduce((a, b) => a + b, 0);
        const { chi2, critical, impossible } = chiSquare(counts, [...want.accept, ...want.reject]);
        expect(impossible, `previous token ${prev}`).toBe(0);
        expect(chi2, `previous token ${prev}`).toBeLessThan(critical);
      }
      expect(rejected).toBeGreaterThan(0.05 * V * 12000); // the residual path ran often
    });

    it(`speculative sampling draws the first two tokens from the target's distribution (T=${opts.temperature}, top-p=${opts.topP})`, () => {
      const start = 2;
      const trials = 30000;
      const rng = new Rng(12345);
      const counts = new Array(V * V).fill(0);
      for (let s = 0; s < trials; s++) {
        const out: number[] = [];
        let prev = start;
        while (out.length < 2) {
          out.push(...ssdStep(prev, 3, opts, rng));
          prev = out[out.length - 1];
        }
        counts[out[0] * V + out[1]]++;
      }
      const p1 = referenceDistribution(target[start], opts.temperature, opts.topP);
      const expected = counts.map((_, i) => {
        const [a, b] = [Math.floor(i / V), i % V];
        return p1[a] * referenceDistribution(target[a], opts.temperature, opts.topP)[b];
      });
      const { chi2, critical, impossible } = chiSquare(counts, expected);
      expect(impossible).toBe(0); // top-p removed it: it must never appear
      expect(chi2).toBeLessThan(critical);
    });
  }

  it("the sampling test has power: drawing from the draft alone fails it", () => {
    const opts = { temperature: 1, topP: 1 };
    const trials = 30000;
    const rng = new Rng(7);
    const counts = new Array(V).fill(0);
    for (let s = 0; s < trials; s++) counts[sample(distribution(draft[2], opts), rng)]++;
    const { chi2, critical } = chiSquare(counts, referenceDistribution(target[2], 1, 1));
    expect(chi2).toBeGreaterThan(critical);
  });

  it("softmaxAt is one entry of the temperature-1 softmax", () => {
    const logits = [2, -1, 0.5, 3, 3];
    const full = referenceDistribution(logits, 1, 1);
    logits.forEach((_, i) => {
      expect(softmaxAt(logits, i)).toBeCloseTo(full[i], 12);
    });
    expect(softmaxAt([1000, 0], 0)).toBeCloseTo(1, 12); // no overflow
  });
});
