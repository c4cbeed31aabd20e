import { describe, expect, it } from "vitest";
import {
  descriptionCounts,
  descriptionMatch,
  POSITIONS,
  type SceneObject,
} from "../../../gpu-service/tools/eval/scene-answers.js";

const at = (place: string, size: string, colour: string, kind: string): SceneObject => ({
  cell: POSITIONS.indexOf(place),
  size,
  colour,
  kind,
});
const scene = [at("top right", "small", "red", "circle"), at("left", "small", "yellow", "triangle")];

describe("description scores", () => {
  it("score a right description fully every way", () => {
    const text =
      "there are two objects . from the top : a small red circle at the top right . at the left there is a small yellow triangle .";
    expect(descriptionCounts(text, scene)).toEqual({ correct: 8, mentioned: 8, truth: 8 });
    expect(descriptionMatch(text, scene)).toEqual({ matched: 8, exact: 2, named: 2 });
  });

  it("charge a swap of two places as two wrong places under the pairing, six wrong attributes keyed by place", () => {
    const text =
      "i see two objects . from the bottom : a small red circle at the left . a small yellow triangle at the top right .";
    // Keyed by place, each object is scored against the other one: size and place right, colour and kind wrong.
    expect(descriptionCounts(text, scene)).toEqual({ correct: 4, mentioned: 8, truth: 8 });
    expect(descriptionMatch(text, scene)).toEqual({ matched: 6, exact: 0, named: 2 });
  });

  it("pair each true object with one named object at most", () => {
    const text = "a yellow triangle , small , at the left . a yellow triangle , small , at the left .";
    // The repeat is paired with the red circle, whose size it gets right: 4 + 1, and one exact object.
    expect(descriptionMatch(text, scene)).toEqual({ matched: 5, exact: 1, named: 2 });
    // Keyed by place, the place named again scores nothing the second time.
    expect(descriptionCounts(text, scene)).toEqual({ correct: 4, mentioned: 8, truth: 8 });
    expect(descriptionMatch("there are no objects .", scene)).toEqual({ matched: 0, exact: 0, named: 0 });
  });

  it("count an object named without a place as inexact", () => {
    expect(descriptionMatch("a small red circle .", scene)).toEqual({ matched: 3, exact: 0, named: 1 });
  });
});
