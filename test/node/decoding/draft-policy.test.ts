/**
 * The batch's draft policy (batch/draft-policy.ts): each batch-size bucket tries every chain cap
 * (none, 1, 2, 3, each drafter's own delta), then takes the one whose rounds gave the most tokens
 * per millisecond, still trying the others now and then (so that it follows a change); buckets
 * are independent (the whole chain can pay for a lone sequence and one draft in a large batch); a
 * round that lost its core for a while does not flip the choice alone.
 */
import { describe, expect, it } from "vitest";
import { CAPS, DraftPolicy } from "../../../gpu-service/src/engine/batch/draft-policy.js";

/** Runs `rounds` rounds of `batch` sequences where a round with cap c gives `rate(c)` tokens per ms; how often each cap was taken. */
function run(policy: DraftPolicy, batch: number, rounds: number, rate: (cap: number) => number): Map<number, number> {
  const taken = new Map(CAPS.map((c) => [c, 0]));
  for (let i = 0; i < rounds; i++) {
    const c = policy.cap(batch);
    taken.set(c, (taken.get(c) ?? 0) + 1 / rounds);
    policy.record(batch, c, batch, batch / rate(c));
  }
  return taken;
}

const ALL = Number.POSITIVE_INFINITY;
/** A lone sequence: the longer the chain, the better. */
const lone = (c: number) => [0.25, 0.3, 0.34, 0.37, 0.4][CAPS.indexOf(c)];
/** A large batch: one or two drafts pay, the whole chain less than none. */
const large = (c: number) => [1.0, 1.15, 1.3, 1.1, 0.9][CAPS.indexOf(c)];

describe("draft policy", () => {
  it("takes the chain cap whose rounds give the most tokens per ms, per batch size", () => {
    const policy = new DraftPolicy();
    expect(run(policy, 1, 300, lone).get(ALL)).toBeGreaterThan(0.8); // a lone sequence: the whole chain
    expect(run(policy, 16, 300, large).get(2)).toBeGreaterThan(0.8); // a large batch: two drafts
    expect(run(policy, 1, 100, lone).get(ALL)).toBeGreaterThan(0.9); // the lone bucket kept its own choice
    const r = policy.rates(16);
    expect(r.get(2)).toBeCloseTo(1.3, 6);
    expect(r.get(0)).toBeCloseTo(1.0, 6);
    expect(r.get(ALL)).toBeCloseTo(0.9, 6);
  });

  it("drafts nothing where no draft pays", () => {
    const policy = new DraftPolicy();
    expect(run(policy, 32, 300, (c) => (c === 0 ? 1.4 : 1.0)).get(0)).toBeGreaterThan(0.85);
  });

  it("tries every cap first, then still the others now and then, and follows a change", () => {
    const policy = new DraftPolicy();
    const first = Array.from({ length: 3 * CAPS.length }, () => {
      const c = policy.cap(4);
      policy.record(4, c, 4, 10);
      return c;
    });
    for (const c of CAPS) expect(first.filter((x) => x === c).length).toBe(3);
    expect(run(policy, 4, 160, lone).get(ALL)).toBeGreaterThan(0.8);
    // the machine changes: only one draft pays now; the explored rounds see it and the choice turns
    const changed = (c: number) => (c === 1 ? 0.5 : 0.3);
    run(policy, 4, 400, changed);
    const after = run(policy, 4, 160, changed);
    expect(after.get(1)).toBeGreaterThan(0.8);
    // the others are still tried, now and then
    expect(after.get(1)).toBeLessThan(1);
  });

  it("does not let one slow round (the core lost for a while) flip its choice", () => {
    const policy = new DraftPolicy();
    run(policy, 2, 100, lone);
    const before = policy.rates(2).get(ALL) as number;
    policy.record(2, ALL, 2, 2 / 0.001); // a round a thousand times slower
    expect(policy.rates(2).get(ALL)).toBeGreaterThan(before * 0.9);
    expect(run(policy, 2, 20, lone).get(ALL)).toBeGreaterThan(0.8);
  });

  it("refuses a cap it does not know", () => {
    expect(() => new DraftPolicy().record(1, 4, 1, 1)).toThrow(/chain caps/);
  });
});
