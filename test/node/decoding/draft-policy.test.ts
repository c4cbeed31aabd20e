/**
 * The batch's draft policy (batch/draft-policy.ts): each batch-size bucket tries the chain caps
 * (none, 1, 2, 3, each drafter's own delta), then takes the one whose rounds gave the most tokens
 * per millisecond, still trying the others now and then (so that it follows a change); buckets
 * keep their own choice (the whole chain can pay for a lone sequence and one draft in a large
 * batch); a round that lost its core for a while does not flip the choice alone; caps that the
 * drafts' measured acceptance says cannot pay are not tried first and explored only seldom, nor,
 * in a new bucket, caps its neighbour found far behind, tried first, unless they lie on the side the
 * batch size moved to (smaller caps for a larger batch, larger for a smaller one).
 */
import { describe, expect, it } from "vitest";
import { CAPS, DraftPolicy } from "../../../gpu-service/src/engine/batch/draft-policy.js";

/**
 * Runs `rounds` rounds of `batch` sequences, every one a drafter with a delta of 4, where a round
 * with cap c gives `rate(c)` tokens per ms (the drafts' acceptance is not reported, so it stays
 * unknown to the policy); how often each cap was taken.
 */
function run(policy: DraftPolicy, batch: number, rounds: number, rate: (cap: number) => number): Map<number, number> {
  const taken = new Map(CAPS.map((c) => [c, 0]));
  const rooms = Array.from({ length: batch }, () => 4);
  for (let i = 0; i < rounds; i++) {
    const c = policy.cap(batch, rooms);
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

  it("in a new bucket, also tries first the caps on the side the batch size moved to", () => {
    // larger: after a lone sequence's bucket settled on the whole chain (one draft far behind it), a
    // batch of 8 where one draft is best finds it (it used to try only the caps close to the lone best)
    const up = new DraftPolicy();
    run(up, 1, 300, lone);
    const eight = (c: number) => [1.0, 1.3, 1.0, 0.8, 0.7][CAPS.indexOf(c)];
    expect(run(up, 8, 300, eight).get(1)).toBeGreaterThan(0.8);
    // smaller: after a large batch settled on two drafts, a lone sequence finds the whole chain
    const down = new DraftPolicy();
    run(down, 16, 300, large);
    expect(run(down, 1, 300, lone).get(ALL)).toBeGreaterThan(0.8);
  });

  it("drafts nothing where no draft pays", () => {
    const policy = new DraftPolicy();
    expect(run(policy, 32, 300, (c) => (c === 0 ? 1.4 : 1.0)).get(0)).toBeGreaterThan(0.85);
  });

  it("tries every cap first, then still the others now and then, and follows a change", () => {
    const policy = new DraftPolicy();
    const first = Array.from({ length: 3 * CAPS.length }, () => {
      const c = policy.cap(4, [4, 4, 4, 4]);
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

  /**
   * Rounds of `batch` drafters (delta 4) in a world where each drafter's chain runs `chain` drafts
   * (theta's stop) of which the first `accepted` are accepted, and a round costs 1 ms plus `perDraft`
   * ms for each draft position run; the rounds report every drafter's outcome. The caps taken, in order.
   */
  function world(
    policy: DraftPolicy,
    batch: number,
    rounds: number,
    w: { chain: number; accepted: number; perDraft: number },
  ) {
    const rooms = Array.from({ length: batch }, () => 4);
    const taken: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const c = policy.cap(batch, rooms);
      taken.push(c);
      const room = Math.min(c, 4);
      const drafted = Math.min(room, w.chain);
      const accepted = Math.min(drafted, w.accepted);
      const outcomes = rooms.map(() => ({ room, drafted, accepted }));
      policy.record(batch, c, batch * (1 + accepted), 1 + drafted * w.perDraft, c > 0 ? outcomes : []);
    }
    return taken;
  }

  it("measures the drafts' acceptance per position, from the rounds that allowed them", () => {
    const policy = new DraftPolicy();
    world(policy, 4, 60, { chain: 3, accepted: 2, perDraft: 0.1 });
    let pi = policy.acceptance();
    expect(pi[0]).toBeCloseTo(1, 6);
    expect(pi[1]).toBeCloseTo(1, 6);
    expect(pi[2]).toBeCloseTo(0, 6); // proposed, rejected
    // no round allowed a fourth draft (the third's rejection ruled the longer chains out): unknown
    expect(pi[3]).toBe(1);
    // a round that allows four, where the chains stop at three
    policy.record(
      4,
      ALL,
      12,
      1.3,
      [1, 2, 3, 4].map(() => ({ room: 4, drafted: 3, accepted: 2 })),
    );
    pi = policy.acceptance();
    expect(pi[3]).toBeCloseTo(0, 6); // allowed, never proposed
    expect(pi[4]).toBe(1); // never allowed (delta 4): unknown
  });

  it("rules out, after one try, the longer chains of a twig whose drafts are rejected", () => {
    const policy = new DraftPolicy();
    // random weights: one draft a chain (below theta), never accepted; drafting costs 20% a round
    const useless = { chain: 1, accepted: 0, perDraft: 0.25 };
    const first = world(policy, 1, 30, useless);
    // no drafts three times, one draft three times, and then no drafts: with its drafts rejected, no
    // cap can pay more than none
    expect(first.slice(0, 6)).toEqual([0, 0, 0, 1, 1, 1]);
    expect(first.slice(6).every((c) => c === 0)).toBe(true);
    // a new batch size tries only what its neighbour found close to its best: no drafts
    const next = world(policy, 4, 30, useless);
    expect(next.every((c) => c === 0)).toBe(true);
    // still explored now and then (so a change in the answers' acceptance is seen), but seldom: every
    // drafting cap is ruled out, so only every 256th round of the bucket drafts (once in these 400)
    const later = world(policy, 4, 400, useless);
    expect(later.filter((c) => c > 0).length).toBe(1);
  });

  it("does not rule out the chains of a twig whose drafts are accepted", () => {
    const policy = new DraftPolicy();
    const good = { chain: 4, accepted: 3, perDraft: 0.1 };
    const taken = world(policy, 1, 200, good);
    for (const c of [1, 2, 3, ALL]) expect(taken.slice(0, 15).filter((x) => x === c).length).toBe(3);
    expect(taken.slice(15).filter((c) => c === ALL || c === 3).length / 185).toBeGreaterThan(0.8);
  });

  it("refuses a cap it does not know", () => {
    expect(() => new DraftPolicy().record(1, 4, 1, 1)).toThrow(/chain caps/);
  });
});
