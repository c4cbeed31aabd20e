/**
 * The batch's KV memory against its budget. Each batched segment holds its slots in one buffer
 * per layer (runtime/batched-kv.ts): slots x capacity, the capacity shared by every slot. This
 * lays those buffers out so that while more than one sequence runs they never hold more than the
 * budget:
 *   - `fit(need, extra)`: every segment p gets room for need[p] positions in each slot and
 *     extra[p] more slots. It keeps the buffers as they are where they already have the room; it
 *     grows them the way the cache grows on its own (capacity by whole chunks, slots doubling, so
 *     that the next joiner needs no copy) when that stays within the budget; else it tries the
 *     tight layout (exactly the slots in use and the capacity asked, giving back spare slots and
 *     capacity that a larger batch or a longer sequence left); and else it changes nothing and
 *     answers false: the batch must wait (a joiner) or preempt (a round).
 *   - `force`: the tight layout whatever the budget, for a sequence that runs alone (the first
 *     always runs, or a request larger than the budget would never be served).
 */
import type { BatchKv } from "../runtime/batched-kv.js";

export class KvRoom {
  constructor(
    private readonly pools: readonly BatchKv[],
    readonly budget: number,
  ) {}

  /** Bytes the buffers hold now. */
  get bytes(): number {
    return this.pools.reduce((a, p) => a + p.bytes, 0);
  }

  /** Makes room for need[p] positions per slot and extra[p] more slots in pool p, within the budget; false (nothing changed) if it cannot. */
  fit(need: readonly number[], extra: readonly number[], force = false): boolean {
    const grown = this.pools.map((p, i) => {
      const slots = p.size + extra[i];
      return {
        slots: slots <= p.slots ? p.slots : Math.max(2 * p.slots, slots),
        capacity: Math.max(p.capacity, need[i]),
      };
    });
    const tight = this.pools.map((p, i) => ({
      slots: Math.max(1, p.size + extra[i]),
      capacity: Math.max(p.longest, need[i]),
    }));
    for (const layout of [grown, tight]) {
      if (this.bytesOf(layout) <= this.budget) return this.apply(layout);
    }
    return force ? this.apply(tight) : false;
  }

  private bytesOf(layout: readonly { slots: number; capacity: number }[]): number {
    return this.pools.reduce((a, p, i) => a + p.bytesFor(layout[i].slots, layout[i].capacity), 0);
  }

  private apply(layout: readonly { slots: number; capacity: number }[]): true {
    this.pools.forEach((p, i) => {
      p.resize(layout[i].slots, layout[i].capacity);
    });
    return true;
  }
}
