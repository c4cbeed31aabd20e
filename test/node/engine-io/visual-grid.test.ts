/**
 * The patch grid clients draw over the picture: a LLaVA-1.5 tower pads the
 * picture to a centred square, so the grid's rectangle, in fractions of the
 * picture, reaches past the picture's shorter side by the padding.
 */
import { describe, expect, it } from "vitest";
import { paddedSquareGrid } from "../../../gpu-service/src/engine/visual-grid.js";

describe("paddedSquareGrid", () => {
  const cases = [
    // a square picture: the grid is the picture
    { w: 96, h: 96, want: { left: 0, top: 0, width: 1, height: 1 } },
    // landscape 2:1: 48 rows of padding above and below, in units of the picture's height
    { w: 192, h: 96, want: { left: 0, top: -0.5, width: 1, height: 2 } },
    // portrait 1:3: 100 columns of padding left and right
    { w: 100, h: 300, want: { left: -1, top: 0, width: 3, height: 1 } },
    // an odd amount of padding: the smaller half goes first (top), as the tower's preprocessing puts it
    { w: 11, h: 8, want: { left: 0, top: -1 / 8, width: 1, height: 11 / 8 } },
  ];
  let checked = 0;
  for (const c of cases) {
    it(`${c.w}x${c.h}`, () => {
      const g = paddedSquareGrid({ width: c.w, height: c.h }, 12, 144);
      expect(g).toEqual({ firstIndex: 0, rows: 12, cols: 12, ...c.want });
      checked++;
    });
  }
  it("checked every case", () => expect(checked).toBe(cases.length));

  it("puts a CLS token kept as a visual feature before the grid", () => {
    expect(paddedSquareGrid({ width: 64, height: 64 }, 8, 65).firstIndex).toBe(1);
  });
});
