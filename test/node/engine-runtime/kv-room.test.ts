/**
 * The batch's KV layout against its budget (batch/kv-room.ts) on two small batch caches: room
 * is made the cheap way (slots doubling, capacity by chunks) while that stays within the budget,
 * else exactly (spare slots and capacity given back), else not at all (false, nothing changed)
 * unless forced.
 */
import { describe, expect, it } from "vitest";
import { KvRoom } from "../../../gpu-service/src/engine/batch/kv-room.js";
import { BatchKv, BATCH_SLOT_CHUNK as C } from "../../../gpu-service/src/engine/runtime/batched-kv.js";

/** A pool of one layer of one head of size 1: 8 bytes per position per slot. */
const pool = () => new BatchKv(1, 1, 1);
/** Bytes of one chunk of one slot. */
const CHUNK = C * 8;

describe("KV room", () => {
  it("grows the cheap way within the budget, exactly when only that fits, never past it unless forced", () => {
    const a = pool();
    const b = pool();
    const room = new KvRoom([a, b], 10 * CHUNK);
    expect(room.bytes).toBe(2 * CHUNK);
    // one slot each: a 2 chunks, b 1
    expect(room.fit([2 * C - 5, 5], [1, 1])).toBe(true);
    a.add(0);
    b.add(0);
    expect([a.slots, a.capacity, b.slots, b.capacity]).toEqual([1, 2 * C, 1, C]);
    // a second slot each: doubling gives 2 slots, 2 x 2 + 2 x 1 = 6 chunks
    expect(room.fit([2 * C - 5, 5], [1, 1])).toBe(true);
    a.add(0);
    b.add(0);
    expect(room.bytes).toBe(6 * CHUNK);
    // a third: doubling (4 x 2 + 4 x 1 = 12 chunks) passes the budget, exactly (3 x 2 + 3 x 1 = 9) does not
    expect(room.fit([2 * C - 5, 5], [1, 1])).toBe(true);
    expect([a.slots, b.slots]).toEqual([3, 3]);
    expect(room.bytes).toBe(9 * CHUNK);
    a.add(0);
    b.add(0);
    // a fourth passes even exactly: nothing changes
    expect(room.fit([2 * C - 5, 5], [1, 1])).toBe(false);
    expect(room.bytes).toBe(9 * CHUNK);
    // longer sequences: 3 x 3 + 3 x 1 = 12 chunks, refused; forced, laid out exactly
    expect(room.fit([2 * C + 5, 5], [0, 0])).toBe(false);
    expect(room.fit([2 * C + 5, 5], [0, 0], true)).toBe(true);
    expect([a.capacity, room.bytes]).toEqual([3 * C, 12 * CHUNK]);
    // two leave: their slots and the capacity no one needs any more are given back when room is needed
    a.remove(2);
    b.remove(2);
    a.remove(1);
    b.remove(1);
    // (keeping a's 3 chunks would be 3 x 3 + 3 x 1 = 12: laid out exactly, 3 x 1 + 3 x 1)
    expect(room.fit([C - 4, C - 4], [2, 2])).toBe(true);
    expect([a.slots, a.capacity, b.slots, b.capacity]).toEqual([3, C, 3, C]);
    expect(room.bytes).toBe(6 * CHUNK);
  });
});
