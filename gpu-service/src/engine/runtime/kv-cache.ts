/**
 * One layer's KV cache: keys and values [kvHeads, length, headDim], kept at
 * their exact length (on CPU, slicing to roll back beat binding present onto
 * past buffers). The segment's `present` output becomes the new cache; rollback
 * (`truncate`) and pruning (`select`) copy once per head.
 */
export class KvCache {
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

  /** Keeps the first `length` positions (rollback after verification). */
  truncate(length: number): void {
    if (length >= this.length) return;
    this.select(Array.from({ length }, (_, i) => i));
  }

  /** Keeps the given positions, in the given order (TTP pruning). */
  select(indices: readonly number[]): void {
    const { kvHeads, headDim } = this;
    const old = this.length;
    const n = indices.length;
    const key = new Float32Array(kvHeads * n * headDim);
    const value = new Float32Array(kvHeads * n * headDim);
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

  clone(): KvCache {
    return new KvCache(this.kvHeads, this.headDim, this.key.slice(), this.value.slice());
  }
}
