/**
 * Clip descriptions scored as training/clips.py's description_score scores them: the first frame's objects
 * keyed by place, then each event after a "then" right when its verb, object and target are. The expected
 * counts were computed by that Python function on these texts.
 */
import { describe, expect, it } from "vitest";
import {
  type ClipObject,
  clipDescriptionCounts,
  inFrame,
  parseEvents,
} from "../../../gpu-service/tools/eval/clip-answers.js";

const o = (
  cell: number,
  kind: string,
  colour: string,
  size: string,
  start: number,
  end: number,
  move: [number, number] | null = null,
  recolour: [number, string] | null = null,
): ClipObject => ({ cell, kind, colour, size, start, end, move, recolour });

// a clip of 5 frames: the red square moves at frame 4, the orange one turns green at frame 1, a blue one appears at 4
const EVENTS = [
  o(1, "square", "red", "large", 0, 5, [4, 6]),
  o(2, "square", "blue", "small", 0, 5),
  o(7, "square", "orange", "large", 0, 5, null, [1, "green"]),
  o(0, "square", "blue", "small", 4, 5),
];
const EVENTS_TEXT =
  "in the first frame there are three objects . at the top there is a large red square . at the top right there is a small blue square . at the bottom there is a large orange square . then the large orange square turns green . then the large red square moves to the bottom left . then a small blue square appears at the top left .";
// 5 frames: the orange square is gone from frame 4, a yellow square appears at frame 1
const COMINGS = [
  o(2, "square", "orange", "large", 0, 4),
  o(7, "circle", "yellow", "small", 0, 5),
  o(8, "cross", "blue", "small", 0, 5),
  o(4, "square", "yellow", "small", 1, 5),
];
const COMINGS_TEXT =
  "in the first frame there are three objects . a orange square , large , at the top right . a yellow circle , small , at the bottom . a blue cross , small , at the bottom right . then a small yellow square appears at the center . then the large orange square disappears .";

const CASES: { name: string; objects: ClipObject[]; text: string; want: [number, number, number] }[] = [
  { name: "the reference description", objects: EVENTS, text: EVENTS_TEXT, want: [15, 15, 15] },
  {
    name: "punctuation joined to words, a move's place wrong",
    objects: EVENTS,
    text: EVENTS_TEXT.replace("moves to the", "moves to the top").replaceAll(" .", ".").replaceAll(" ,", ","),
    want: [14, 15, 15],
  },
  {
    name: "a colour change to the wrong colour",
    objects: EVENTS,
    text: EVENTS_TEXT.replace("turns", "turns red"),
    want: [14, 15, 15],
  },
  { name: "appear and disappear, right", objects: COMINGS, text: COMINGS_TEXT, want: [14, 14, 14] },
  {
    name: "an event named twice scores once",
    objects: COMINGS,
    text: COMINGS_TEXT.replace("then", "then then"),
    want: [14, 14, 14],
  },
  {
    name: "verbs swapped",
    objects: COMINGS,
    text: COMINGS_TEXT.replace("appears", "moves").replace("disappears", "dismoves"),
    want: [12, 14, 14],
  },
  {
    name: "a wrong first frame and a colour change that is not there",
    objects: COMINGS,
    text: "in the first frame there is one object . a red circle , small , at the top . then the small red circle turns blue green .",
    want: [0, 5, 14],
  },
];

describe("clip descriptions, as clips.description_score counts them", () => {
  let checked = 0;
  for (const c of CASES) {
    it(c.name, () => {
      const got = clipDescriptionCounts(c.text, c.objects, 5);
      expect([got.correct, got.mentioned, got.truth]).toEqual(c.want);
      checked++;
    });
  }
  it("checked every case", () => expect(checked).toBe(CASES.length));

  it("reads events and frames", () => {
    expect(
      parseEvents(
        "a b . then the large red square moves to the bottom left . then a small blue square appears at the top left .",
      ),
    ).toEqual([
      ["moves", "large", "red", "square", 6],
      ["appears", "small", "blue", "square", 0],
    ]);
    expect(inFrame(EVENTS, 4).map((x) => [x.cell, x.colour])).toEqual([
      [6, "red"],
      [2, "blue"],
      [7, "green"],
      [0, "blue"],
    ]);
  });
});
