/**
 * The parity checker's own rules, on hand-made inputs: kept visual tokens must
 * equal PyTorch's except for swaps across an exact tie at the R-th score (counted),
 * and pixels are compared over every value in 8-bit steps.
 */
import { describe, expect, it } from "vitest";
import { normalisePixels, pixelDifference } from "../../../gpu-service/tools/eval/parity-pixels.js";
import { compareKept } from "../../../gpu-service/tools/eval/parity-selection.js";

describe("kept visual tokens against PyTorch's", () => {
  const scores = [0.5, 0.1, 0.3, 0.3, 0.05, 0.3];
  it("accepts the same set, and a swap among tokens tied at the R-th score (counted)", () => {
    expect(compareKept([0, 2], [0, 2], scores)).toMatchObject({ equal: true, ties: 0, mismatches: [] });
    // R = 2: 0.5, then one of three tokens at 0.3
    expect(compareKept([0, 3], [0, 2], scores)).toMatchObject({ equal: false, ties: 2, mismatches: [] });
  });
  it("refuses a token off the boundary, and a kept set one short or one long even at a tie", () => {
    // 2 left out is at the tie, but 1 kept instead is not
    expect(compareKept([0, 1], [0, 2], scores)).toMatchObject({ equal: false, ties: 1, mismatches: [1] });
    expect(compareKept([0], [0, 2], scores)).toMatchObject({ equal: false, mismatches: [2] });
    expect(compareKept([0, 2, 3], [0, 2], scores)).toMatchObject({ equal: false, mismatches: [3] });
  });
  it("measures how close the boundary came to a tie", () => {
    expect(compareKept([0, 2], [0, 2], [1, 0.25, 0.5, 0.4]).boundaryGap).toBeCloseTo(0.1, 12);
  });
});

describe("pixels against PyTorch's", () => {
  const mean = [0.5, 0.4, 0.3];
  const std = [0.25, 0.2, 0.3];
  const u8 = Uint8Array.from({ length: 4 * 4 * 3 }, (_, i) => (i * 37) % 256);
  it("is zero for the same 8-bit values and counts every value", () => {
    const d = pixelDifference(normalisePixels(u8, mean, std), u8, mean, std);
    expect(d.values).toBe(48);
    expect(d.maxSteps).toBeLessThan(1e-4);
  });
  it("reports the mean and largest difference in 8-bit steps, whatever the channel's std", () => {
    const off = Uint8Array.from(u8, (v, i) => (i % 3 === 2 ? v : Math.min(255, v + 1)));
    const oneOff = Uint8Array.from(u8);
    oneOff[5] = u8[5] > 250 ? u8[5] - 4 : u8[5] + 4;
    const d = pixelDifference(normalisePixels(off, mean, std), u8, mean, std);
    expect(d.meanSteps).toBeCloseTo(off.reduce((a, v, i) => a + Math.abs(v - u8[i]), 0) / 48, 4);
    expect(pixelDifference(normalisePixels(oneOff, mean, std), u8, mean, std).maxSteps).toBeCloseTo(4, 4);
  });
  it("refuses pictures of different sizes", () => {
    expect(() => pixelDifference(new Float32Array(12), u8, mean, std)).toThrow(/48/);
  });
});
