/**
 * One segment's KV caches for a batch of sequences, in the slot layout a batched segment reads
 * in place (onnx/decoder.ts, `batched`): per layer, keys transposed [slots, kvHeads, headDim, C]
 * and values [slots, kvHeads, C, headDim], where C (the capacity) is the same for every slot and
 * each slot holds its own number of positions (`lengths`). A run feeds the first `size` slots,
 * with kv_mask [size, 1, 1, C] = 0 on each slot's held positions and -inf on the rest.
 *
 * Each sequence owns one slot and keeps it, per segment, for its life: its own length (TTP's
 * layouts give the same sequence different lengths in different segments), its own rollback
 * (`truncate`) and pruning (`select`). Slots in use are always 0..size-1: `remove` moves the last
 * slot into the freed one (and says which it moved), so a run never feeds a hole.
 *
 * Capacity: one for every slot, grown as the longest slot needs (`reserve`), and given back by
 * `fit` when the longest has left. Memory: `bytes` is what the buffers hold now; `bytesFor(slots,
 * capacity)` what they would hold, and `resize` lays them out anew, for a byte budget
 * (batch/kv-room.ts).
 */
import type { LayerKv } from "./kv-cache.js";
import { allocateKv } from "./tensor-io.js";

/**
 * Capacity grows (and shrinks) in whole chunks of this many positions. A run reads every slot's
 * whole capacity, masked or not (its attention streams [slots, kvHeads, headDim, C] from memory):
 * the capacity follows the longest slot closely, not the most any slot may come to need.
 */
export const BATCH_SLOT_CHUNK = 16;

export class BatchKv {
  /** Per layer: [allocated slots, kvHeads, headDim, capacity]. */
  keyT: Float32Array[];
  /** Per layer: [allocated slots, kvHeads, capacity, headDim]. */
  value: Float32Array[];
  /** Positions held by each slot in use. */
  readonly lengths: number[] = [];
  capacity: number;
  private allocated: number;

  constructor(
    readonly numLayers: number,
    readonly kvHeads: number,
    readonly headDim: number,
    { capacity = BATCH_SLOT_CHUNK, slots = 1 }: { capacity?: number; slots?: number } = {},
  ) {
    this.capacity = roundUp(capacity);
    this.allocated = Math.max(1, slots);
    this.keyT = Array.from({ length: numLayers }, () => allocateKv(this.allocated * this.slotSize));
    this.value = Array.from({ length: numLayers }, () => allocateKv(this.allocated * this.slotSize));
  }

  /** Slots in use (the batch a run feeds). */
  get size(): number {
    return this.lengths.length;
  }

  /** Floats of one slot of one layer's keys (and of its values). */
  private get slotSize(): number {
    return this.kvHeads * this.headDim * this.capacity;
  }

  /** Bytes of buffers for `slots` slots of `capacity` positions (keys and values, every layer). */
  bytesFor(slots: number, capacity: number): number {
    return slots * roundUp(capacity) * this.kvHeads * this.headDim * this.numLayers * 2 * 4;
  }

  /** Bytes the buffers hold now. */
  get bytes(): number {
    return this.bytesFor(this.allocated, this.capacity);
  }

  /** Slots the buffers have room for (at least `size`). */
  get slots(): number {
    return this.allocated;
  }

  /** Positions the longest slot in use holds. */
  get longest(): number {
    return Math.max(0, ...this.lengths);
  }

  /**
   * New buffers of `slots` slots of `capacity` positions (rounded up to whole chunks), keeping what
   * the slots in use hold: larger to make room ahead of time, smaller to give memory back.
   */
  resize(slots: number, capacity: number): void {
    if (slots < Math.max(1, this.size)) throw new RangeError(`${slots} slots for ${this.size} in use`);
    if (capacity < this.longest) throw new RangeError(`capacity ${capacity} below the ${this.longest} positions held`);
    if (slots !== this.allocated || roundUp(capacity) !== this.capacity) this.regrow(slots, roundUp(capacity));
  }

  /** A new empty slot at the end (index `size - 1` after the call), with room for `need` positions. */
  add(need: number): number {
    this.reserve(need);
    if (this.size === this.allocated) this.regrow(Math.max(this.allocated * 2, 1), this.capacity);
    this.lengths.push(0);
    return this.size - 1;
  }

  /** Makes room for `need` positions in every slot (the capacity is shared). */
  reserve(need: number): void {
    if (need > this.capacity) this.regrow(this.allocated, roundUp(need));
  }

  /**
   * Shrinks the capacity to the longest slot and one chunk to grow into, when it is more than a
   * chunk beyond that (after the longest sequence left): runs then read less.
   */
  fit(): void {
    const want = roundUp(Math.max(0, ...this.lengths) + BATCH_SLOT_CHUNK);
    if (this.capacity > want + BATCH_SLOT_CHUNK) this.regrow(this.allocated, want);
  }

  /**
   * Frees `slot`: the contents of slot `end - 1` (default: the last) move into it and the slots
   * from `end` on move down one (a batch keeps sequences still being prefilled after its running
   * ones: batch/batch-loop.ts). Returns the index that moved into `slot` (`end - 1`), or -1 when
   * `slot` was `end - 1`.
   */
  remove(slot: number, end = this.size): number {
    this.check(slot);
    if (!(Number.isInteger(end) && end > slot && end <= this.size))
      throw new RangeError(`no slot ${end - 1} to move into slot ${slot} (${this.size} in use)`);
    const moved = end - 1;
    const n = this.slotSize;
    if (slot !== moved) {
      for (let l = 0; l < this.numLayers; l++) {
        this.keyT[l].copyWithin(slot * n, moved * n, (moved + 1) * n);
        this.value[l].copyWithin(slot * n, moved * n, (moved + 1) * n);
      }
      this.lengths[slot] = this.lengths[moved];
    }
    if (end < this.size)
      for (let l = 0; l < this.numLayers; l++) {
        this.keyT[l].copyWithin(moved * n, end * n, this.size * n);
        this.value[l].copyWithin(moved * n, end * n, this.size * n);
      }
    this.lengths.splice(moved, 1);
    return slot === moved ? -1 : moved;
  }

  /** Frees the slots from `slot` on (the last ones: nothing moves; the buffers stay as they are). */
  removeFrom(slot: number): void {
    if (!(Number.isInteger(slot) && slot >= 0 && slot <= this.size))
      throw new RangeError(`no slots from ${slot} (${this.size} in use)`);
    this.lengths.length = slot;
  }

  /** Drops every slot and gives back the memory (the buffers shrink to one empty slot). */
  clear(): void {
    this.lengths.length = 0;
    this.regrow(1, BATCH_SLOT_CHUNK);
  }

  /** Copies a single sequence's caches (one per layer, any layout) into `slot`, replacing what it held. */
  load(slot: number, caches: readonly LayerKv[]): void {
    this.check(slot);
    if (caches.length !== this.numLayers)
      throw new RangeError(`${caches.length} layer caches for ${this.numLayers} layers`);
    const n = caches[0]?.length ?? 0;
    this.reserve(n);
    const { kvHeads: kv, headDim: hd, capacity: cap } = this;
    caches.forEach((c, l) => {
      if (c.length !== n) throw new RangeError("layer caches of one segment differ in length");
      const keys = c.keys(); // [kv, n, hd]
      const values = c.values();
      const kT = this.keyT[l];
      const v = this.value[l];
      const base = slot * this.slotSize;
      for (let h = 0; h < kv; h++) {
        v.set(values.subarray(h * n * hd, (h + 1) * n * hd), base + h * cap * hd);
        for (let d = 0; d < hd; d++) {
          const row = base + (h * hd + d) * cap;
          for (let t = 0; t < n; t++) kT[row + t] = keys[(h * n + t) * hd + d];
        }
      }
    });
    this.lengths[slot] = n;
  }

  /**
   * Writes a run's new keys and values after each slot's held positions: `rows` is [counts.length,
   * S, numLayers, 2, kvHeads*headDim] (each row's key and value in every layer, a batched segment's
   * new_kv) for slots from..from+counts.length-1; slot from+i takes its first `counts[i]` rows (the
   * rest were padding).
   */
  append(counts: readonly number[], s: number, rows: Float32Array, from = 0): void {
    if (!(from >= 0 && from + counts.length <= this.size))
      throw new RangeError(`${counts.length} counts from slot ${from} for ${this.size} slots`);
    const stride = this.numLayers * 2 * this.kvHeads * this.headDim;
    if (rows.length !== counts.length * s * stride)
      throw new RangeError(`${rows.length} values for ${counts.length} x ${s} rows of ${stride}`);
    this.reserve(Math.max(0, ...counts.map((c, i) => this.lengths[from + i] + c)));
    const { kvHeads: kv, headDim: hd, capacity: cap } = this; // after reserve: it may grow the capacity
    const width = kv * hd;
    for (let l = 0; l < this.numLayers; l++) {
      const kT = this.keyT[l];
      const v = this.value[l];
      for (let i = 0; i < counts.length; i++) {
        const p = this.lengths[from + i];
        const base = (from + i) * this.slotSize;
        for (let t = 0; t < counts[i]; t++) {
          const key = (i * s + t) * stride + l * 2 * width;
          const value = key + width;
          // plain loops, no subarray views: a round writes thousands of rows, and each view is garbage
          for (let h = 0; h < kv; h++) {
            const vDst = base + (h * cap + p + t) * hd;
            const kDst = base + h * hd * cap + p + t;
            const at = h * hd;
            for (let d = 0; d < hd; d++) {
              v[vDst + d] = rows[value + at + d];
              kT[kDst + d * cap] = rows[key + at + d];
            }
          }
        }
      }
    }
    for (let i = 0; i < counts.length; i++) this.lengths[from + i] += counts[i];
  }

  /** Keeps the first `length` positions of `slot` (rollback after verification). */
  truncate(slot: number, length: number): void {
    this.check(slot);
    this.lengths[slot] = Math.max(0, Math.min(length, this.lengths[slot]));
  }

  /** Keeps the given positions of `slot`, in increasing order (pruning), moved to its front. */
  select(slot: number, indices: readonly number[]): void {
    this.check(slot);
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j];
      if (!(Number.isInteger(i) && i >= 0 && i < this.lengths[slot]))
        throw new RangeError(`no position ${i} in slot ${slot}`);
      if (j > 0 && i <= indices[j - 1]) throw new RangeError("select() takes increasing positions");
    }
    const { kvHeads: kv, headDim: hd, capacity: cap } = this;
    const base = slot * this.slotSize;
    // front to back: slot j is read from indices[j] >= j, which no earlier write has touched
    for (let l = 0; l < this.numLayers; l++) {
      const kT = this.keyT[l];
      const v = this.value[l];
      for (let r = 0; r < kv * hd; r++) {
        const row = base + r * cap;
        for (let j = 0; j < indices.length; j++) kT[row + j] = kT[row + indices[j]];
      }
      for (let h = 0; h < kv; h++)
        for (let j = 0; j < indices.length; j++) {
          const src = base + (h * cap + indices[j]) * hd;
          if (indices[j] !== j) v.copyWithin(base + (h * cap + j) * hd, src, src + hd);
        }
    }
    this.lengths[slot] = indices.length;
  }

  /** kv_mask [to - from, 1, 1, C] of slots from..to-1 (default: all in use): 0 on each slot's held positions, -inf on the rest. */
  mask(from = 0, to = this.size): Float32Array {
    const cap = this.capacity;
    const m = new Float32Array((to - from) * cap).fill(Number.NEGATIVE_INFINITY);
    for (let b = from; b < to; b++) m.fill(0, (b - from) * cap, (b - from) * cap + this.lengths[b]);
    return m;
  }

  /** Slots from..to-1 (default: all in use) of layer l's keys and values (views, for a run's feeds). */
  inUse(l: number, from = 0, to = this.size): { keyT: Float32Array; value: Float32Array } {
    const n = this.slotSize;
    return { keyT: this.keyT[l].subarray(from * n, to * n), value: this.value[l].subarray(from * n, to * n) };
  }

  /** Keys of `slot`, layer l, as [kvHeads, length, headDim] (a copy, for checks). */
  keys(slot: number, l: number): Float32Array {
    this.check(slot);
    const { kvHeads: kv, headDim: hd, capacity: cap } = this;
    const n = this.lengths[slot];
    const base = slot * this.slotSize;
    const out = new Float32Array(kv * n * hd);
    for (let h = 0; h < kv; h++)
      for (let d = 0; d < hd; d++)
        for (let t = 0; t < n; t++) out[(h * n + t) * hd + d] = this.keyT[l][base + (h * hd + d) * cap + t];
    return out;
  }

  /** Values of `slot`, layer l, as [kvHeads, length, headDim] (a copy, for checks). */
  values(slot: number, l: number): Float32Array {
    this.check(slot);
    const { kvHeads: kv, headDim: hd, capacity: cap } = this;
    const n = this.lengths[slot];
    const base = slot * this.slotSize;
    const out = new Float32Array(kv * n * hd);
    for (let h = 0; h < kv; h++)
      out.set(this.value[l].subarray(base + h * cap * hd, base + (h * cap + n) * hd), h * n * hd);
    return out;
  }

  private check(slot: number): void {
    if (!(Number.isInteger(slot) && slot >= 0 && slot < this.size))
      throw new RangeError(`no slot ${slot} (${this.size} in use)`);
  }

  /** New buffers of `slots` x `capacity`, keeping what the slots in use hold. */
  private regrow(slots: number, capacity: number): void {
    const { kvHeads: kv, headDim: hd, capacity: old } = this;
    const oldSlot = this.slotSize;
    const newSlot = kv * hd * capacity;
    for (let l = 0; l < this.numLayers; l++) {
      const kT = allocateKv(slots * newSlot);
      const v = allocateKv(slots * newSlot);
      for (let b = 0; b < this.size; b++) {
        const n = this.lengths[b];
        for (let r = 0; r < kv * hd; r++)
          kT.set(this.keyT[l].subarray(b * oldSlot + r * old, b * oldSlot + r * old + n), b * newSlot + r * capacity);
        for (let h = 0; h < kv; h++)
          v.set(
            this.value[l].subarray(b * oldSlot + h * old * hd, b * oldSlot + (h * old + n) * hd),
            b * newSlot + h * capacity * hd,
          );
      }
      this.keyT[l] = kT;
      this.value[l] = v;
    }
    this.allocated = slots;
    this.capacity = capacity;
  }
}

function roundUp(n: number): number {
  return Math.max(1, Math.ceil(n / BATCH_SLOT_CHUNK)) * BATCH_SLOT_CHUNK;
}
