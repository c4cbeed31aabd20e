/**
 * A decoder layer's KV cache, in one of two layouts (a segment's attention decides which):
 *
 * - `KvCache` (contrib and plain attention): keys and values [kvHeads, length, headDim] at
 *   their exact length. The segment's `present` output becomes the new cache; rollback
 *   (`truncate`) and pruning (`select`) copy once per head.
 * - `SlotKvCache` (direct attention): buffers with spare slots, keys transposed
 *   [kvHeads, headDim, capacity] and values [kvHeads, capacity, headDim], that the graph reads
 *   in place. A step writes only its new tokens (`append`); rollback just forgets slots; the
 *   buffers grow by whole chunks, so most steps allocate nothing; a request reserves its whole
 *   length (prompt, answer, drafts) up front (`reserve`), so none of its steps allocate.
 *
 * Every KV buffer is allocated through tensor-io.ts's `allocateKv`.
 */
import { allocateKv } from "./tensor-io.js";

/** What decoding code needs of a layer's cache, whatever its layout. */
export interface LayerKv {
  readonly kvHeads: number;
  readonly headDim: number;
  /** Positions held. */
  readonly length: number;
  /** Keeps the first `length` positions (rollback after verification). */
  truncate(length: number): void;
  /** Keeps the given positions, in the given order (TTP pruning). */
  select(indices: readonly number[]): void;
  /** Makes room for `total` positions ahead of time (a no-op where the layout has no spare room). */
  reserve(total: number): void;
  /** Keys as [kvHeads, length, headDim] (a copy for the slot layout). */
  keys(): Float32Array;
  /** Values as [kvHeads, length, headDim] (a copy for the slot layout). */
  values(): Float32Array;
}

export class KvCache implements LayerKv {
  constructor(
    readonly kvHeads: number,
    readonly headDim: number,
    public key: Float32Array = new Float32Array(0),
    public value: Float32Array = new Float32Array(0),
  ) {}

  get length(): number {
    return this.key.length / (this.kvHeads * this.headDim);
  }

  /** Replaces the contents with a segment's present_key/present_value. */
  set(key: Float32Array, value: Float32Array): void {
    this.key = key;
    this.value = value;
  }

  truncate(length: number): void {
    if (length >= this.length) return;
    this.select(Array.from({ length }, (_, i) => i));
  }

  reserve(_total: number): void {}

  select(indices: readonly number[]): void {
    const { kvHeads, headDim } = this;
    const old = this.length;
    const n = indices.length;
    const key = allocateKv(kvHeads * n * headDim);
    const value = allocateKv(kvHeads * n * headDim);
    for (let h = 0; h < kvHeads; h++) {
      for (let j = 0; j < n; j++) {
        const src = (h * old + indices[j]) * headDim;
        const dst = (h * n + j) * headDim;
        key.set(this.key.subarray(src, src + headDim), dst);
        value.set(this.value.subarray(src, src + headDim), dst);
      }
    }
    this.key = key;
    this.value = value;
  }

  keys(): Float32Array {
    return this.key;
  }

  values(): Float32Array {
    return this.value;
  }

  clone(): KvCache {
    return new KvCache(this.kvHeads, this.headDim, this.key.slice(), this.value.slice());
  }
}

/** Slots are added in chunks of this many positions. */
export const SLOT_CHUNK = 64;

export class SlotKvCache implements LayerKv {
  /** [kvHeads, headDim, capacity] */
  keyT: Float32Array;
  /** [kvHeads, capacity, headDim] */
  value: Float32Array;
  length = 0;
  capacity: number;
  /** The additive mask over the slots, kept up to date: 0 for held positions, -inf for spare ones. */
  private slotMask: Float32Array;

  constructor(
    readonly kvHeads: number,
    readonly headDim: number,
    capacity = SLOT_CHUNK,
  ) {
    this.capacity = capacity;
    this.keyT = allocateKv(kvHeads * headDim * capacity);
    this.value = allocateKv(kvHeads * capacity * headDim);
    this.slotMask = new Float32Array(capacity).fill(Number.NEGATIVE_INFINITY);
  }

  /** Makes room for `total` positions, keeping what is held (grows to whole chunks, with half a chunk spare). */
  reserve(total: number): void {
    if (total <= this.capacity) return;
    this.resize(Math.ceil((total + SLOT_CHUNK / 2) / SLOT_CHUNK) * SLOT_CHUNK);
  }

  /** Gives the buffers exactly `capacity` slots (at least the positions held), keeping what is held. */
  resize(capacity: number): void {
    const { kvHeads: kv, headDim: hd, length: n, capacity: old } = this;
    if (capacity < n) throw new RangeError(`${capacity} slots cannot hold ${n} positions`);
    const keyT = allocateKv(kv * hd * capacity);
    for (let r = 0; r < kv * hd; r++) keyT.set(this.keyT.subarray(r * old, r * old + n), r * capacity);
    const value = allocateKv(kv * capacity * hd);
    for (let h = 0; h < kv; h++) value.set(this.value.subarray(h * old * hd, (h * old + n) * hd), h * capacity * hd);
    this.keyT = keyT;
    this.value = value;
    this.capacity = capacity;
    this.slotMask = new Float32Array(capacity).fill(Number.NEGATIVE_INFINITY);
    this.slotMask.fill(0, 0, n);
  }

  /**
   * Writes S new tokens' keys [kvHeads, headDim, S] and values [kvHeads, S, headDim] (as the graph
   * outputs them: already in the buffers' order, so a few contiguous copies) after the held ones.
   */
  append(newKeyT: Float32Array, newValue: Float32Array): void {
    const { kvHeads: kv, headDim: hd } = this;
    const s = newKeyT.length / (kv * hd);
    if (!Number.isInteger(s) || newValue.length !== newKeyT.length)
      throw new RangeError(`new keys/values of ${newKeyT.length}/${newValue.length} values for ${kv} x ${hd}`);
    this.reserve(this.length + s);
    const { capacity: cap, length: p, keyT, value } = this;
    // a key row (one head's one dimension) of S values per copy; one token: plain stores
    if (s < 8) for (let r = 0; r < kv * hd; r++) for (let t = 0; t < s; t++) keyT[r * cap + p + t] = newKeyT[r * s + t];
    else for (let r = 0; r < kv * hd; r++) keyT.set(newKeyT.subarray(r * s, (r + 1) * s), r * cap + p);
    for (let h = 0; h < kv; h++) value.set(newValue.subarray(h * s * hd, (h + 1) * s * hd), (h * cap + p) * hd);
    this.slotMask.fill(0, p, p + s);
    this.length = p + s;
  }

  /** The additive mask over the slots: 0 for held positions, -inf for spare ones (the cache's own buffer: read only). */
  mask(): Float32Array {
    return this.slotMask;
  }

  truncate(length: number): void {
    if (length >= this.length) return;
    const n = Math.max(0, length);
    this.slotMask.fill(Number.NEGATIVE_INFINITY, n, this.length);
    this.length = n;
  }

  /** Keeps the given positions in place: moves them to the front of the same buffers (no allocation). */
  select(indices: readonly number[]): void {
    const { kvHeads: kv, headDim: hd, capacity: cap } = this;
    let increasing = true;
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j];
      if (!(Number.isInteger(i) && i >= 0 && i < this.length)) throw new RangeError(`no position ${i} in the cache`);
      if (j > 0 && i <= indices[j - 1]) increasing = false;
    }
    if (!increasing) {
      this.selectCopy(indices);
      return;
    }
    // in place, front to back: with increasing indices, slot j is read from slot indices[j] >= j,
    // which no earlier write has touched
    for (let r = 0; r < kv * hd; r++) {
      const row = r * cap;
      for (let j = 0; j < indices.length; j++) this.keyT[row + j] = this.keyT[row + indices[j]];
    }
    for (let h = 0; h < kv; h++)
      for (let j = 0; j < indices.length; j++) {
        const src = (h * cap + indices[j]) * hd;
        if (indices[j] !== j) this.value.copyWithin((h * cap + j) * hd, src, src + hd);
      }
    this.slotMask.fill(Number.NEGATIVE_INFINITY, indices.length, this.length);
    this.length = indices.length;
  }

  /** select() for indices in any order: through new buffers. */
  private selectCopy(indices: readonly number[]): void {
    const { kvHeads: kv, headDim: hd, capacity: cap } = this;
    const keyT = allocateKv(kv * hd * cap);
    const value = allocateKv(kv * cap * hd);
    for (let r = 0; r < kv * hd; r++)
      for (let j = 0; j < indices.length; j++) keyT[r * cap + j] = this.keyT[r * cap + indices[j]];
    for (let h = 0; h < kv; h++)
      for (let j = 0; j < indices.length; j++) {
        const src = (h * cap + indices[j]) * hd;
        value.set(this.value.subarray(src, src + hd), (h * cap + j) * hd);
      }
    this.keyT = keyT;
    this.value = value;
    this.slotMask.fill(Number.NEGATIVE_INFINITY, indices.length, this.length);
    this.slotMask.fill(0, 0, indices.length);
    this.length = indices.length;
  }

  keys(): Float32Array {
    const { kvHeads: kv, headDim: hd, capacity: cap, length: n } = this;
    const out = new Float32Array(kv * n * hd);
    for (let h = 0; h < kv; h++)
      for (let d = 0; d < hd; d++)
        for (let j = 0; j < n; j++) out[(h * n + j) * hd + d] = this.keyT[(h * hd + d) * cap + j];
    return out;
  }

  values(): Float32Array {
    const { kvHeads: kv, headDim: hd, capacity: cap, length: n } = this;
    const out = new Float32Array(kv * n * hd);
    for (let h = 0; h < kv; h++) out.set(this.value.subarray(h * cap * hd, (h * cap + n) * hd), h * n * hd);
    return out;
  }
}
