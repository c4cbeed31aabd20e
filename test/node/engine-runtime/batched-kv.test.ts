/**
 * The batch KV cache (runtime/batched-kv.ts) against a plain model of it: per slot, a list of
 * (key, value) rows. Slots are loaded, appended to with padding (all of them, or a range, as a
 * run over a range of slots writes), rolled back, pruned, removed (the last slot, or the last
 * before a given end, moving into the hole, the slots after that end moving down one; or the last
 * slots from one on), regrown, shrunk to fit and laid out anew (larger or smaller, `resize`), in a
 * seeded random order; after every operation each slot's keys and values, the lengths and the
 * mask agree with the model.
 */
import { describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { BATCH_SLOT_CHUNK, BatchKv } from "../../../gpu-service/src/engine/runtime/batched-kv.js";
import { KvCache } from "../../../gpu-service/src/engine/runtime/kv-cache.js";

const KV = 2;
const HD = 3;
const LAYERS = 2;
/** A position's key (and, negated, value) in one layer: every value distinct. */
type Row = { key: number[]; value: number[] };

describe("batch KV cache", () => {
  it("agrees with a list-of-rows model through loads, padded appends, rollback, pruning, removal, growth and resizing", () => {
    const rng = new Rng(5);
    let counter = 1;
    const freshRow = (): Row => {
      const key = Array.from({ length: KV * HD }, () => counter++);
      return { key, value: key.map((x) => -x) };
    };
    const cache = new BatchKv(LAYERS, KV, HD, { capacity: 8 });
    const model: Row[][][] = []; // [slot][layer][position]

    const check = () => {
      expect(cache.lengths).toEqual(model.map((m) => m[0].length));
      const mask = cache.mask();
      model.forEach((slot, b) => {
        for (let t = 0; t < cache.capacity; t++)
          expect(mask[b * cache.capacity + t]).toBe(t < slot[0].length ? 0 : Number.NEGATIVE_INFINITY);
        slot.forEach((rows, l) => {
          // [kv, n, hd] from the model's rows [n, kv*hd]
          const n = rows.length;
          const keys = new Float32Array(KV * n * HD);
          const values = new Float32Array(KV * n * HD);
          rows.forEach((r, t) => {
            for (let h = 0; h < KV; h++)
              for (let d = 0; d < HD; d++) {
                keys[(h * n + t) * HD + d] = r.key[h * HD + d];
                values[(h * n + t) * HD + d] = r.value[h * HD + d];
              }
          });
          expect(Array.from(cache.keys(b, l))).toEqual(Array.from(keys));
          expect(Array.from(cache.values(b, l))).toEqual(Array.from(values));
        });
      });
    };

    const load = (n: number) => {
      const layers = Array.from({ length: LAYERS }, () => Array.from({ length: n }, freshRow));
      const single = layers.map((rows) => {
        const c = new KvCache(KV, HD);
        const k = new Float32Array(KV * n * HD);
        const v = new Float32Array(KV * n * HD);
        rows.forEach((r, t) => {
          for (let h = 0; h < KV; h++)
            for (let d = 0; d < HD; d++) {
              k[(h * n + t) * HD + d] = r.key[h * HD + d];
              v[(h * n + t) * HD + d] = r.value[h * HD + d];
            }
        });
        c.set(k, v);
        return c;
      });
      cache.load(cache.add(n), single);
      model.push(layers);
    };

    /** Rows for every slot, or (half the time) for a range of slots only, as a run over a range writes them. */
    const append = () => {
      const whole = rng.next() < 0.5;
      const from = whole ? 0 : Math.floor(rng.next() * model.length);
      const to = whole ? model.length : from + 1 + Math.floor(rng.next() * (model.length - from));
      const counts = model.slice(from, to).map(() => Math.floor(rng.next() * 4)); // 0..3 each, padded to the most
      const s = Math.max(1, ...counts);
      // [rows, S, layers, key and value, KV*HD], as a batched segment's new_kv
      const width = KV * HD;
      const rows = new Float32Array(counts.length * s * LAYERS * 2 * width).fill(Number.NaN); // padding must never be read
      for (let l = 0; l < LAYERS; l++)
        counts.forEach((n, i) => {
          for (let t = 0; t < n; t++) {
            const r = freshRow();
            model[from + i][l].push(r);
            const at = ((i * s + t) * LAYERS + l) * 2 * width;
            rows.set(r.key, at);
            rows.set(r.value, at + width);
          }
        });
      cache.append(counts, s, rows, from);
      // a range's mask and buffers are the whole cache's, cut to the range
      const cap = cache.capacity;
      expect(Array.from(cache.mask(from, to))).toEqual(Array.from(cache.mask().subarray(from * cap, to * cap)));
      const slot = KV * HD * cap;
      expect(cache.inUse(0, from, to).keyT.length).toBe((to - from) * slot);
      expect(cache.inUse(0, from, to).value[0]).toBe(cache.value[0][from * slot]);
    };

    load(5);
    load(1);
    check();
    for (let step = 0; step < 120; step++) {
      const op = rng.next();
      const b = Math.floor(rng.next() * model.length);
      if (model.length === 0 || op < 0.15) load(1 + Math.floor(rng.next() * 40));
      else if (op < 0.56) append();
      else if (op < 0.6) {
        // the last slots go, nothing moves
        const from = Math.floor(rng.next() * (model.length + 1));
        cache.removeFrom(from);
        model.length = from;
      } else if (op < 0.75) {
        const to = Math.floor(rng.next() * (model[b][0].length + 1));
        cache.truncate(b, to);
        for (const rows of model[b]) rows.length = to;
      } else if (op < 0.87) {
        const keep = model[b][0].map((_, i) => i).filter(() => rng.next() < 0.6);
        cache.select(b, keep);
        model[b] = model[b].map((rows) => keep.map((i) => rows[i]));
      } else if (op < 0.92) {
        // the capacity follows the longest slot: never below it, after fit() at most a chunk beyond
        // the longest rounded up to a chunk, plus one chunk to grow into
        cache.fit();
        const longest = Math.max(...model.map((m) => m[0].length));
        const roundUp = (n: number) => Math.ceil(n / BATCH_SLOT_CHUNK) * BATCH_SLOT_CHUNK;
        expect(cache.capacity).toBeGreaterThanOrEqual(longest);
        expect(cache.capacity).toBeLessThanOrEqual(roundUp(longest + BATCH_SLOT_CHUNK) + BATCH_SLOT_CHUNK);
      } else if (op < 0.96) {
        const slots = Math.max(1, model.length + Math.floor(rng.next() * 3));
        const capacity = cache.longest + Math.floor(rng.next() * 100);
        cache.resize(slots, capacity);
        expect(cache.slots).toBe(slots);
        expect(cache.capacity).toBe(Math.max(1, Math.ceil(capacity / BATCH_SLOT_CHUNK)) * BATCH_SLOT_CHUNK);
        expect(cache.bytes).toBe(cache.bytesFor(slots, capacity));
      } else if (model.length > 1) {
        // the slot before `end` moves into the hole, the slots from `end` on move down one
        // (end = size: the last moves; less: slots kept after the running ones stay in order)
        const end = b + 1 + Math.floor(rng.next() * (model.length - b));
        const moved = end - 1;
        expect(cache.remove(b, end)).toBe(b === moved ? -1 : moved);
        model[b] = model[moved];
        model.splice(moved, 1);
      }
      check();
    }
    expect(cache.capacity % BATCH_SLOT_CHUNK).toBe(0);
    cache.clear();
    expect(cache.size).toBe(0);
    expect(cache.bytes).toBe(cache.bytesFor(1, BATCH_SLOT_CHUNK));
  });

  it("counts its bytes as slots x capacity x layers x kv heads x head size x keys and values x 4", () => {
    const cache = new BatchKv(LAYERS, KV, HD);
    expect(cache.bytesFor(3, 100)).toBe(3 * 112 * LAYERS * KV * HD * 2 * 4);
    cache.add(10);
    cache.add(130);
    expect(cache.capacity).toBe(144);
    expect(cache.bytes).toBe(cache.bytesFor(2, 144));
    expect(cache.longest).toBe(0);
    cache.resize(2, 70); // smaller: gives memory back
    expect(cache.bytes).toBe(cache.bytesFor(2, 80));
    expect(() => cache.resize(1, 80)).toThrow(/1 slots for 2 in use/);
    expect(() => cache.truncate(2, 0)).toThrow(/no slot 2/);
    expect(() => cache.select(0, [0])).toThrow(/no position 0/);
  });
});
