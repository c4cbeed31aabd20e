/**
 * LLaVA-NeXT's AnyRes geometry and layout against transformers: its own test's token count
 * (test_processor_llava_next's test_image_token_filling: 1526 for a 500x316 picture on
 * llava-v1.6-vicuna-7b-hf), select_best_resolution's choices, unpad_image's rounding, the token order
 * of pack_image_features (against the float64 reference's own packing), the grids clients draw, and
 * Pillow's bicubic resize bit for bit (test/fixtures/pillow-bicubic.json, written by
 * scripts/pillow-bicubic-fixture.py with Pillow).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  patchOutputSize,
  type Size,
  selectBestResolution,
  unpadBounds,
} from "../../../gpu-service/src/engine/anyres/geometry.js";
import {
  anyresGrids,
  anyresLayout,
  anyresTokenCount,
  maxAnyresTokens,
} from "../../../gpu-service/src/engine/anyres/layout.js";
import { resizePicture } from "../../../gpu-service/src/engine/pad-resize.js";
import { packImageFeaturesRef, pillowResizeRef } from "../../../gpu-service/src/engine/reference/next.js";
import { nextPinpoints } from "../../../gpu-service/tools/make-tiny/tiny-next.js";
import { repoRoot } from "../../support/gpu-service.js";

/** llava-hf/llava-v1.6-*: a 336-pixel CLIP tower, patch 14, these pinpoints. */
const V16: Size[] = [
  [336, 672],
  [672, 336],
  [672, 672],
  [1008, 336],
  [336, 1008],
];
const V16_SPEC = { pinpoints: V16, tile: 336, side: 24 };

describe("AnyRes geometry, as transformers computes it", () => {
  it("gives a 500x316 picture 1526 visual tokens on llava-v1.6 (transformers' own test)", () => {
    expect(selectBestResolution([500, 316], V16)).toEqual([672, 336]);
    expect(anyresTokenCount([500, 316], V16_SPEC)).toBe(1526);
  });

  it("chooses the resolution that keeps the most pixels, then wastes the least", () => {
    const cases: [Size, Size][] = [
      [
        [480, 640],
        [672, 672],
      ],
      [
        [336, 336],
        [336, 672],
      ], // every pinpoint keeps it whole; the first of the least wasteful wins
      [
        [100, 1000],
        [336, 1008],
      ],
      [
        [1000, 100],
        [1008, 336],
      ],
      [
        [2000, 1000],
        [672, 336],
      ],
    ];
    for (const [size, best] of cases) expect(selectBestResolution(size, V16), `${size}`).toEqual(best);
    expect(cases).toHaveLength(5);
  });

  it("resizes to fit with the ceiling of the scaled side, as get_patch_output_size", () => {
    expect(patchOutputSize([480, 640], [672, 672])).toEqual([504, 672]);
    expect(patchOutputSize([500, 316], [672, 336])).toEqual([532, 336]);
    expect(patchOutputSize([90, 44], [48, 16])).toEqual([33, 16]);
  });

  it("rounds unpad_image's new size to 7 decimals before truncating, as Python's int(round(x, 7))", () => {
    // 49 * (4 / 196) is 0.9999999999999999 in floating point: rounded, one row of the 4 is the picture's
    expect(unpadBounds(4, 4, [49, 196])).toEqual({ top: 1, bottom: 3, left: 0, right: 4 });
    expect(unpadBounds(48, 48, [480, 640])).toEqual({ top: 6, bottom: 42, left: 0, right: 48 });
    expect(unpadBounds(48, 24, [500, 316])).toEqual({ top: 5, bottom: 43, left: 0, right: 24 });
  });

  it("counts at most the largest pinpoint's tokens", () => {
    expect(maxAnyresTokens(V16_SPEC)).toBe(576 + 48 * 49);
    expect(maxAnyresTokens({ pinpoints: nextPinpoints(16), tile: 16, side: 4 })).toBe(16 + 8 * 9);
  });
});

describe("the layout of the visual tokens", () => {
  const spec = { pinpoints: nextPinpoints(16), tile: 16, side: 4 };
  const SIZES: Size[] = [
    [50, 90],
    [90, 44],
    [70, 70],
    [36, 140],
    [49, 196],
    [17, 5],
  ];
  let checked = 0;
  for (const size of SIZES) {
    it(`${size[1]}x${size[0]}: tokens in pack_image_features' order, grids over the picture`, () => {
      const layout = anyresLayout(size, spec);
      // the reference packs each view's patch numbers; the engine's sources must read the same
      const perView = Array.from({ length: layout.views }, (_, v) =>
        Array.from({ length: 16 }, (_, p) => Float64Array.of(v * 16 + p)),
      );
      const ref = packImageFeaturesRef(perView, size, spec.pinpoints, 16, Float64Array.of(-1));
      expect(Array.from(layout.sources)).toEqual(ref.map((r) => r[0]));
      // the grids hold every token but the newlines, once; the base view's covers the whole picture
      const grids = anyresGrids(layout, 16);
      expect(grids[0]).toMatchObject({ firstIndex: 0, rows: 4, cols: 4, left: 0, top: 0, width: 1, height: 1 });
      const covered: number[] = [];
      for (const g of grids)
        for (let r = 0; r < g.rows; r++)
          for (let c = 0; c < g.cols; c++) covered.push(g.firstIndex + r * (g.rowStride ?? g.cols) + c);
      const visual = Array.from(layout.sources.keys()).filter((i) => layout.sources[i] >= 0);
      expect(covered.sort((a, b) => a - b)).toEqual(visual);
      // a tile grid's tokens come from that tile
      for (const g of grids.slice(1)) expect(layout.sources[g.firstIndex] >> 4).toBe(1 + (g.index as number));
      // the tile grids together span the picture's kept rows: from its top edge (or a bit past) to its bottom
      const tiles = grids.slice(1);
      expect(Math.min(...tiles.map((g) => g.top))).toBeLessThan(0.5);
      expect(Math.max(...tiles.map((g) => g.left + g.width))).toBeGreaterThan(0.5);
      checked++;
    });
  }
  it("checked every size", () => expect(checked).toBe(SIZES.length));
});

describe("Pillow's bicubic resize, bit for bit", () => {
  const fixture = JSON.parse(readFileSync(join(repoRoot, "test", "fixtures", "pillow-bicubic.json"), "utf8")) as {
    cases: { width: number; height: number; to: [number, number]; pixels: string; resized: string }[];
  };
  it("the engine's resize and the reference's equal Pillow's on every case", () => {
    let checked = 0;
    for (const c of fixture.cases) {
      const picture = { data: new Uint8Array(Buffer.from(c.pixels, "base64")), width: c.width, height: c.height };
      const want = Array.from(Buffer.from(c.resized, "base64"));
      const [W, H] = c.to;
      expect(
        Array.from(resizePicture(picture, c.width, c.height, W, H)),
        `${c.width}x${c.height} to ${W}x${H}`,
      ).toEqual(want);
      expect(Array.from(pillowResizeRef(picture, W, H).data)).toEqual(want);
      checked++;
    }
    expect(checked).toBe(8);
  });
});
