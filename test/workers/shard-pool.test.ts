/**
 * The edge's replica choice (edge/src/gpu/shard-pool.ts), inside workerd, on a
 * clock the test moves: least outstanding requests first with ties rotated,
 * and the circuit breaker (open after a failure, one trial request after the
 * cool-down, closed on success, reopened for twice as long on a failed trial
 * up to the longest cool-down, every shard tried when all are open, a trial
 * that never reports back given up after one cool-down).
 */
import { describe, expect, it } from "vitest";
import { ShardPool } from "../../edge/src/gpu/shard-pool.js";

const A = "https://a.example";
const B = "https://b.example";
const C = "https://c.example";

function pool() {
  let t = 1_000_000;
  const p = new ShardPool({ openMs: 10_000, maxOpenMs: 40_000 }, () => t);
  const advance = (ms: number) => {
    t += ms;
  };
  return { p, advance };
}

describe("ShardPool: least outstanding requests", () => {
  it("sends the next request to the shard with the fewest outstanding requests, rotating ties", () => {
    const { p } = pool();
    const firsts: string[] = [];
    for (let i = 0; i < 6; i++) firsts.push(p.order([A, B, C])[0]);
    // nothing outstanding: the start rotates over the three, twice each
    expect(firsts.filter((u) => u === A)).toHaveLength(2);
    expect(firsts.filter((u) => u === B)).toHaveLength(2);
    expect(firsts.filter((u) => u === C)).toHaveLength(2);

    const endA = p.begin(A);
    const endA2 = p.begin(A);
    const endB = p.begin(B);
    let checked = 0;
    for (let i = 0; i < 3; i++) {
      expect(p.order([A, B, C])).toEqual([C, B, A]);
      checked++;
    }
    expect(checked).toBe(3);
    endA();
    endA2();
    endA2(); // a second call of the same release changes nothing
    expect(p.outstanding(A)).toBe(0);
    expect(p.order([A, B, C]).at(-1)).toBe(B);
    endB();
    expect(p.view([A, B])).toEqual([
      { url: A, breaker: "closed", outstanding: 0, attempts: 2, failures: 0 },
      { url: B, breaker: "closed", outstanding: 0, attempts: 1, failures: 0 },
    ]);
  });

  it("spreads a burst evenly when every request stays open", () => {
    const { p } = pool();
    const counts = new Map<string, number>();
    for (let i = 0; i < 9; i++) {
      const first = p.order([A, B, C])[0];
      p.begin(first);
      counts.set(first, (counts.get(first) ?? 0) + 1);
    }
    expect([...counts.values()]).toEqual([3, 3, 3]);
  });
});

describe("ShardPool: the circuit breaker", () => {
  it("opens a failed shard's breaker, sends one trial after the cool-down, and closes it on success", () => {
    const { p, advance } = pool();
    p.failed(A);
    expect(p.breaker(A)).toBe("open");
    expect(p.view([A])[0]).toMatchObject({ breaker: "open", retryInMs: 10_000, failures: 1 });
    let last = 0;
    for (let i = 0; i < 4; i++) if (p.order([A, B]).at(-1) === A) last++;
    expect(last).toBe(4);
    advance(10_001);
    expect(p.breaker(A)).toBe("half-open");
    // exactly one request tries it, first; the next ones go elsewhere while the trial runs
    expect(p.order([A, B])).toEqual([A, B]);
    expect(p.breaker(A)).toBe("open");
    expect(p.order([A, B])).toEqual([B, A]);
    p.succeeded(A);
    expect(p.breaker(A)).toBe("closed");
    expect(new Set([p.order([A, B])[0], p.order([A, B])[0]])).toEqual(new Set([A, B]));
  });

  it("reopens for twice as long after a failed trial, up to the longest cool-down, and starts over after a success", () => {
    const { p, advance } = pool();
    const waits: number[] = [];
    p.failed(A);
    for (let round = 0; round < 4; round++) {
      let waited = 0;
      while (p.breaker(A) !== "half-open") {
        advance(1000);
        waited += 1000;
      }
      waits.push(waited);
      expect(p.order([A, B])[0]).toBe(A);
      p.failed(A);
    }
    expect(waits).toEqual([10_000, 20_000, 40_000, 40_000]);
    p.succeeded(A);
    p.failed(A);
    advance(10_001);
    expect(p.breaker(A)).toBe("half-open");
  });

  it("does not lengthen the cool-down for the other calls that fail with the shard, only for a failed trial", () => {
    const { p, advance } = pool();
    // four streams were running on A when it died: four failures, one cool-down
    for (let i = 0; i < 4; i++) p.failed(A);
    expect(p.view([A])[0]).toMatchObject({ breaker: "open", retryInMs: 10_000, failures: 4 });
    advance(10_001);
    expect(p.order([A, B])[0]).toBe(A);
    p.failed(A);
    expect(p.view([A])[0]).toMatchObject({ breaker: "open", retryInMs: 20_000, failures: 5 });
  });

  it("tries every shard when all are open, the least recently failed first; a client that leaves frees the trial", () => {
    const { p, advance } = pool();
    p.failed(B);
    advance(100);
    p.failed(A);
    expect(p.order([A, B])).toEqual([B, A]);
    advance(9_950);
    // B's time is up (A's not yet): B's trial goes first
    expect(p.order([A, B])).toEqual([B, A]);
    p.abandoned(B);
    expect(p.breaker(B)).toBe("half-open");
    advance(100);
    // both are due now: one trial per request, the other still listed (last)
    const both = p.order([A, B]);
    expect(both).toHaveLength(2);
    expect(new Set(both)).toEqual(new Set([A, B]));
  });

  it("gives a trial that never reports back up after one cool-down", () => {
    const { p, advance } = pool();
    p.failed(A);
    advance(10_001);
    expect(p.order([A, B])[0]).toBe(A);
    advance(5_000);
    expect(p.breaker(A)).toBe("open");
    advance(5_001);
    expect(p.breaker(A)).toBe("half-open");
    expect(p.order([A, B])[0]).toBe(A);
  });

  it("takes new cool-downs from configure(), and lists closed shards first for calls that book no trial", () => {
    const { p, advance } = pool();
    p.configure({ openMs: 500, maxOpenMs: 1_000 });
    p.failed(A);
    expect(p.healthyFirst([A, B, C])).toEqual([B, C, A]);
    // healthyFirst books no trial: A stays half-open for the next request
    advance(501);
    expect(p.healthyFirst([A, B])).toEqual([B, A]);
    expect(p.breaker(A)).toBe("half-open");
    expect(p.order([A, B])[0]).toBe(A);
    p.failed(A);
    expect(p.view([A])[0]).toMatchObject({ breaker: "open", retryInMs: 1_000, failures: 2 });
  });
});
