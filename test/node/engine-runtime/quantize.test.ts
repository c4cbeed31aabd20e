/**
 * Weight formats: int4 packing in MatMulNBits' layout round-trips (codes, the nibble
 * order, padding of a K that is not a multiple of the block), fp16 conversion, and
 * ONNX Runtime's MatMulNBits (accuracy_level 0) computes exactly x · dequant(W)^T.
 */
import { describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { GraphBuilder } from "../../../gpu-service/src/engine/onnx/graph.js";
import { linear } from "../../../gpu-service/src/engine/onnx/layers.js";
import {
  blocksPerRow,
  dequantizeInt4,
  fromFloat16Bits,
  int4Code,
  quantizeInt4,
  toFloat16Bits,
} from "../../../gpu-service/src/engine/onnx/quantize.js";
import { createSession, ort } from "../../../gpu-service/src/engine/runtime/session.js";
import { randomTensor } from "../../support/random-weights.js";
import { maxRelError } from "../../support/tolerance.js";

describe("int4 packing", () => {
  it("round-trips values on the int4 grid exactly, with the even k in the low nibble", () => {
    const n = 3;
    const k = 64;
    const scale = [0.5, -0.25, 2];
    // codes 0..15 cycling; each block holds code 0 (the value of largest magnitude: m = -8 d)
    const codes = Array.from({ length: n * k }, (_, i) => i % 16);
    const w = Float32Array.from(codes, (c, i) => (c - 8) * scale[Math.floor(i / k)]);
    const q = quantizeInt4(w, n, k);
    expect(q.packed.length).toBe(n * 2 * 16);
    expect(q.scales.length).toBe(n * 2);
    expect(Array.from(dequantizeInt4(q))).toEqual(Array.from(w));
    for (let r = 0; r < n; r++) for (let i = 0; i < k; i++) expect(int4Code(q, r, i)).toBe(codes[r * k + i]);
    // byte 0 of row 0 holds k=0 (code 0) low and k=1 (code 1) high
    expect(q.packed[0]).toBe(0x10);
    expect(q.packed[1]).toBe(0x32);
  });

  it("stays within half a step of each block's scale (one step where it clips) on random weights, with a padded last block", () => {
    const n = 5;
    const k = 72; // 2 full blocks and one of 8 values
    const w = randomTensor(new Rng(9), [n, k], 1).data;
    const q = quantizeInt4(w, n, k);
    expect(blocksPerRow(k)).toBe(3);
    const back = dequantizeInt4(q);
    for (let r = 0; r < n; r++) {
      for (let i = 0; i < k; i++) {
        const d = Math.abs(q.scales[r * 3 + Math.floor(i / 32)]);
        const bound = int4Code(q, r, i) === 15 ? d : d / 2;
        expect(Math.abs(back[r * k + i] - w[r * k + i])).toBeLessThanOrEqual(bound + 1e-7);
      }
      for (let i = k; i < 96; i++) expect(int4Code(q, r, i)).toBe(8); // padding is zero
    }
  });

  it("keeps an all-zero block at zero", () => {
    const q = quantizeInt4(new Float32Array(32), 1, 32);
    expect(Array.from(dequantizeInt4(q))).toEqual(new Array(32).fill(0));
  });
});

describe("fp16", () => {
  it("converts known values and rounds to nearest", () => {
    expect(toFloat16Bits(1)).toBe(0x3c00);
    expect(toFloat16Bits(-2)).toBe(0xc000);
    expect(toFloat16Bits(65504)).toBe(0x7bff);
    expect(toFloat16Bits(1e6)).toBe(0x7c00);
    expect(toFloat16Bits(2 ** -24)).toBe(1);
    expect(toFloat16Bits(1e-9)).toBe(0);
    expect(fromFloat16Bits(0x3555)).toBeCloseTo(0.333251953125, 12);
    const rng = new Rng(3);
    for (let i = 0; i < 1000; i++) {
      const x = (rng.next() * 2 - 1) * 100;
      expect(Math.abs(fromFloat16Bits(toFloat16Bits(x)) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11);
    }
  });
});

describe("MatMulNBits on ONNX Runtime", () => {
  it("computes x · dequant(W)^T (accuracy_level 0) for a K that is not a multiple of the block", async () => {
    const rng = new Rng(4);
    const [n, k, rows] = [24, 72, 3];
    const w = randomTensor(rng, [n, k], 0.5);
    const x = randomTensor(rng, [rows, k], 1).data;
    const g = new GraphBuilder("nbits");
    const input = g.input("x", "float32", [rows, k]);
    g.output(linear(g, input, { weight: w }, "w", { precision: "int4", int4AccuracyLevel: 0 }), "y", "float32", [
      rows,
      n,
    ]);
    const session = await createSession(g.toBytes(), { threads: 1 });
    const y = (await session.run({ x: new ort.Tensor("float32", x, [rows, k]) })).y.data as Float32Array;
    const dq = dequantizeInt4(quantizeInt4(w.data, n, k));
    const expected = new Float64Array(rows * n);
    for (let r = 0; r < rows; r++)
      for (let o = 0; o < n; o++) {
        let s = 0;
        for (let i = 0; i < k; i++) s += x[r * k + i] * dq[o * k + i];
        expected[r * n + o] = s;
      }
    expect(maxRelError(y, expected)).toBeLessThan(1e-5);
    await session.release();
  });
});
