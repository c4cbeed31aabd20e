/**
 * Weight formats for the decoder's linear layers: int4 blocks in the layout of
 * ONNX Runtime's com.microsoft MatMulNBits, and fp16 (IEEE half) conversion.
 *
 * int4 (symmetric, no zero points): a weight W [N, K] (HF Linear layout: N out,
 * K in) is cut along K into blocks of `block` values. Each block b of row n has
 * one float scale d = m / -8, where m is the block's value of largest magnitude
 * (sign kept), and codes q = clamp(round(w / d) + 8, 0, 15), so w ≈ (q - 8) * d
 * and m itself is exact (q = 0); values of the other sign beyond 7|d| clip to code 15
 * (error at most |d|, elsewhere at most |d| / 2). Codes are packed two per byte, the even k in
 * the low nibble: B is uint8 [N, ceil(K / block), block / 2], scales are
 * [N * ceil(K / block)]. A K that is not a multiple of the block is padded with
 * code 8 (zero).
 *
 * @example
 * const q = quantizeInt4(w.data, n, k);         // w: [N, K]
 * const back = dequantizeInt4(q);                // ≈ w, within half a step per block
 */

export const INT4_BLOCK = 32;

export interface Int4Weight {
  /** Rows (output features). */
  n: number;
  /** Columns (input features). */
  k: number;
  block: number;
  /** uint8 [n, blocksPerRow, block / 2] */
  packed: Uint8Array;
  /** [n * blocksPerRow] */
  scales: Float32Array;
}

export function blocksPerRow(k: number, block = INT4_BLOCK): number {
  return Math.ceil(k / block);
}

/** Quantizes a row-major [n, k] matrix to int4 blocks (see the file comment). */
export function quantizeInt4(w: Float32Array, n: number, k: number, block = INT4_BLOCK): Int4Weight {
  if (w.length !== n * k) throw new RangeError(`int4: ${w.length} values for [${n}, ${k}]`);
  if (block < 2 || block % 2 !== 0) throw new RangeError(`int4: block ${block} must be even`);
  const nb = blocksPerRow(k, block);
  const half = block / 2;
  const packed = new Uint8Array(n * nb * half);
  const scales = new Float32Array(n * nb);
  const codes = new Uint8Array(block);
  for (let r = 0; r < n; r++) {
    const row = r * k;
    for (let b = 0; b < nb; b++) {
      const start = b * block;
      const end = Math.min(start + block, k);
      let m = 0;
      for (let i = start; i < end; i++) if (Math.abs(w[row + i]) > Math.abs(m)) m = w[row + i];
      const d = m === 0 ? 0 : m / -8;
      scales[r * nb + b] = d;
      const inv = d === 0 ? 0 : 1 / d;
      codes.fill(8);
      for (let i = start; i < end; i++) {
        codes[i - start] = Math.min(15, Math.max(0, Math.round(w[row + i] * inv) + 8));
      }
      const dst = (r * nb + b) * half;
      for (let j = 0; j < half; j++) packed[dst + j] = codes[2 * j] | (codes[2 * j + 1] << 4);
    }
  }
  return { n, k, block, packed, scales };
}

/** The int4 code of element (r, i): the even i in the low nibble. */
export function int4Code(q: Int4Weight, r: number, i: number): number {
  const nb = blocksPerRow(q.k, q.block);
  const b = Math.floor(i / q.block);
  const j = i % q.block;
  const byte = q.packed[(r * nb + b) * (q.block / 2) + (j >> 1)];
  return j % 2 === 0 ? byte & 0x0f : byte >> 4;
}

/** Back to float32 [n, k]: w = (q - 8) * scale. */
export function dequantizeInt4(q: Int4Weight): Float32Array {
  const out = new Float32Array(q.n * q.k);
  const nb = blocksPerRow(q.k, q.block);
  for (let r = 0; r < q.n; r++) {
    for (let i = 0; i < q.k; i++) {
      out[r * q.k + i] = (int4Code(q, r, i) - 8) * q.scales[r * nb + Math.floor(i / q.block)];
    }
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE half bits, round to nearest even (overflow to infinity, subnormals kept). */
export function toFloat16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function toFloat16(data: Float32Array): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = toFloat16Bits(data[i]);
  return out;
}

/** IEEE half bits → number. */
export function fromFloat16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
