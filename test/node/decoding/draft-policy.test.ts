/**
 * The batch's draft policy (batch/draft-policy.ts): each batch-size bucket tries both arms, then
 * takes the one whose rounds gave more tokens per millisecond, still trying the other now and then
 * (so that it follows a change); buckets are independent (drafting can pay for a lone sequence and
 * not for a large batch); a round that lost its core for a while does not flip the choice alone.
 */
import { describe, expect, it } from "vitest";
import { DraftPolicy } from "../../../gpu-service/src/engine/batch/draft-policy.js";

/** Runs `rounds` rounds of `batch` sequences where a drafting round gives `drafting` tokens per ms and a plain one `plain`; the share that drafted. */
function run(policy: DraftPolicy, batch: number, rounds: number, drafting: number, plain: number): number {
  let drafted = 0;
  for (let i = 0; i < rounds; i++) {
    const d = policy.drafts(batch);
    if (d) drafted++;
    policy.record(batch, d, batch, batch / (d ? drafting : plain));
  }
  return drafted / rounds;
}

describe("draft policy", () => {
  it("drafts where drafting rounds give more tokens per ms, not where plain ones do, per batch size", () => {
    const policy = new DraftPolicy();
    expect(run(policy, 1, 200, 0.4, 0.25)).toBeGreaterThan(0.85); // a lone sequence: drafts pay
    expect(run(policy, 16, 200, 1.0, 1.4)).toBeLessThan(0.15); // a large batch: they do not
    expect(run(policy, 1, 100, 0.4, 0.25)).toBeGreaterThan(0.9); // the lone bucket kept its own choice
    const r = policy.rates(16);
    expect(r.plain).toBeCloseTo(1.4, 6);
    expect(r.drafting).toBeCloseTo(1.0, 6);
  });

  it("tries both arms first, then still the other one now and then, and follows a change", () => {
    const policy = new DraftPolicy();
    const first = Array.from({ length: 6 }, () => {
      const d = policy.drafts(4);
      policy.record(4, d, 4, 10);
      return d;
    });
    expect(first.filter((d) => d).length).toBe(3);
    expect(run(policy, 4, 160, 0.5, 0.3)).toBeGreaterThan(0.85);
    // the machine changes: drafting stops paying; the explored rounds see it and the choice turns
    run(policy, 4, 160, 0.2, 0.3);
    expect(run(policy, 4, 160, 0.2, 0.3)).toBeLessThan(0.15);
  });

  it("does not let one slow round (the core lost for a while) flip its choice", () => {
    const policy = new DraftPolicy();
    run(policy, 2, 100, 0.5, 0.3);
    const before = policy.rates(2).drafting;
    policy.record(2, true, 2, 2 / 0.001); // a round a thousand times slower
    expect(policy.rates(2).drafting).toBeGreaterThan(before * 0.9);
    expect(run(policy, 2, 20, 0.5, 0.3)).toBeGreaterThan(0.85);
  });
});
