/**
 * One layer's KV cache: keys and values [kvHeads, capacity, headDim], of which the
 * first `length` positions of each head are valid. Appending new tokens writes them
 * in place (the buffers grow by a quarter, in steps of 64 positions, when full);
 * rollback (`truncate`) only lowers the length; pruning (`select`) copies once per
 * head. The contrib decoder graph reads the buffers whole as its past (GroupQueryAttention
 * reads only the valid rows) and returns just the new tokens' keys and values, so a
 * decode step moves a few KB between Node and ONNX Runtime instead of the whole cache.
 * The plain graph wants past at its exact size: `key`/`value` give it (a copy only when
 * there is spare capacity) and `set` takes its present outputs.
 */
const GROW_STEP = 64;

export class KvCache {
  private keyBuf: Float32Array;
  private valueBuf: Float32Array;
  private len: number;

  constructor(
    readonly kvHeads: number,
    readonly headDim: number,
    key: Float32Array = new Float32Array(0),
    value: Float32Array = new Float32Array(0),
  ) {
    this.keyBuf = key;
    this.valueBuf = value;
    this.len = key.length / (kvHeads * headDim);
  }

  get length(): number {
    return this.len;
  }

  /** Positions the buffers hold room for. */
  get capacity(): number {
    return this.keyBuf.length / (this.kvHeads * this.headDim);
  }

  /** The whole key buffer [kvHeads, capacity, headDim] (for a graph that reads only the valid rows). */
  get keyBuffer(): Float32Array {
    return this.keyBuf;
  }

  get valueBuffer(): Float32Array {
    return this.valueBuf;
  }

  /** Keys [kvHeads, length, headDim], dense. */
  get key(): Float32Array {
    return this.dense(this.keyBuf);
  }

  get value(): Float32Array {
    return this.dense(this.valueBuf);
  }

  /** Replaces the contents with a segment's present_key/present_value [kvHeads, length, headDim]. */
  set(key: Float32Array, value: Float32Array): void {
    this.keyBuf = key;
    this.valueBuf = value;
    this.len = key.length / (this.kvHeads * this.headDim);
  }

  /** Appends `count` new tokens given as rows [count, kvHeads * headDim] (the graph's new_key/new_value). */
  append(newKey: Float32Array, newValue: Float32Array, count: number): void {
    const { kvHeads, headDim } = this;
    if (newKey.length !== count * kvHeads * headDim || newValue.length !== newKey.length)
      throw new RangeError(`append: ${newKey.length} key values for ${count} tokens`);
    if (this.len + count > this.capacity) {
      const wanted = Math.max(this.len + count, Math.ceil(this.capacity * 1.25));
      this.resize(Math.ceil(wanted / GROW_STEP) * GROW_STEP);
    }
    const cap = this.capacity;
    for (let t = 0; t < count; t++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = (t * kvHeads + h) * headDim;
        const dst = (h * cap + this.len + t) * headDim;
        this.keyBuf.set(newKey.subarray(src, src + headDim), dst);
        this.valueBuf.set(newValue.subarray(src, src + headDim), dst);
      }
    }
    this.len += count;
  }

  /** Keeps the first `length` positions (rollback after verification): no copy. */
  truncate(length: number): void {
    if (length < this.len) this.len = Math.max(0, length);
  }

  /** Keeps the given positions, in the given order (TTP pruning). */
  select(indices: readonly number[]): void {
    const { kvHeads, headDim } = this;
    const cap = this.capacity;
    const n = indices.length;
    const key = new Float32Array(kvHeads * n * headDim);
    const value = new Float32Array(kvHeads * n * headDim);
    for (let h = 0; h < kvHeads; h++) {
      for (let j = 0; j < n; j++) {
        if (!(indices[j] >= 0 && indices[j] < this.len))
          throw new RangeError(`select: position ${indices[j]} outside 0..${this.len - 1}`);
        const src = (h * cap + indices[j]) * headDim;
        const dst = (h * n + j) * headDim;
        key.set(this.keyBuf.subarray(src, src + headDim), dst);
        value.set(this.valueBuf.subarray(src, src + headDim), dst);
      }
    }
    this.set(key, value);
  }

  clone(): KvCache {
    return new KvCache(this.kvHeads, this.headDim, this.key.slice(), this.value.slice());
  }

  private resize(capacity: number): void {
    const { kvHeads, headDim } = this;
    const old = this.capacity;
    const rows = this.len * headDim;
    const grow = (buf: Float32Array) => {
      const out = new Float32Array(kvHeads * capacity * headDim);
      for (let h = 0; h < kvHeads; h++)
        out.set(buf.subarray(h * old * headDim, h * old * headDim + rows), h * capacity * headDim);
      return out;
    };
    this.keyBuf = grow(this.keyBuf);
    this.valueBuf = grow(this.valueBuf);
  }

  private dense(buf: Float32Array): Float32Array {
    const cap = this.capacity;
    if (cap === this.len) return buf;
    const { kvHeads, headDim } = this;
    const out = new Float32Array(kvHeads * this.len * headDim);
    for (let h = 0; h < kvHeads; h++)
      out.set(buf.subarray(h * cap * headDim, (h * cap + this.len) * headDim), h * this.len * headDim);
    return out;
  }
}
