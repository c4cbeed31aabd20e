/**
 * Rows of hidden states with their positions: what goes from one segment of the decoder to the next
 * (the prompt's rows, a draft's layer-K states), and the three ways the decoder cuts and joins them.
 */

/** n rows: their hidden states [n, H], row-major, and each row's position. */
export interface Rows {
  hidden: Float32Array;
  positions: readonly number[];
}

export const NO_ROWS: Rows = { hidden: new Float32Array(0), positions: [] };

/** Rows `idx` of a row-major [S, H] matrix. */
export function selectRows(h: Float32Array, idx: readonly number[], H: number): Float32Array {
  const out = new Float32Array(idx.length * H);
  idx.forEach((r, j) => {
    out.set(h.subarray(r * H, (r + 1) * H), j * H);
  });
  return out;
}

/** The arrays one after another, in one. */
export function concatFloats(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** a's rows, then b's (either one as it is when the other is empty). */
export function concatRows(a: Rows, b: Rows, H: number): Rows {
  if (b.positions.length === 0) return a;
  if (a.positions.length === 0) return b;
  const hidden = new Float32Array((a.positions.length + b.positions.length) * H);
  hidden.set(a.hidden, 0);
  hidden.set(b.hidden, a.hidden.length);
  return { hidden, positions: [...a.positions, ...b.positions] };
}

/** The last n rows of x. */
export function lastRows(x: Rows, n: number, H: number): Rows {
  return { hidden: x.hidden.subarray(x.hidden.length - n * H), positions: x.positions.slice(-n) };
}
