/**
 * Scoring the demo model's answers on its synthetic world (training/scenes.py is
 * the other half of this contract): short answers by exact match of their words,
 * descriptions by attribute-level precision and recall of the objects named.
 */

export const KINDS = ["circle", "square", "triangle", "cross"];
export const COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"];
export const SIZES = ["small", "large"];
export const POSITIONS = [
  "top left",
  "top",
  "top right",
  "left",
  "center",
  "right",
  "bottom left",
  "bottom",
  "bottom right",
];

export interface SceneObject {
  cell: number;
  kind: string;
  colour: string;
  size: string;
}

/** The words of a text as the demo tokenizer splits them (runs of word characters, or of other non-space characters). */
export function words(text: string): string[] {
  return text.match(/\w+|[^\w\s]+/g) ?? [];
}

/**
 * The kind of a short question: its words, with each run of colours, shapes, sizes and places
 * replaced by one "_" ("what colour is the _ ?", "how many _ objects are there ?"). Given the
 * expected answer, "what is at the _ ?" is split in two, "(an object)" and "(nothing)": most of
 * its cells are empty, and an empty cell is far easier than naming the object at an occupied one.
 * @example questionKind("what is at the top left ?", "a small red circle") // "what is at the _ ? (an object)"
 */
export function questionKind(question: string, answer?: string): string {
  const named = new Set([...KINDS, ...COLOURS, ...SIZES, ...POSITIONS.flatMap((p) => p.split(" "))]);
  const out: string[] = [];
  for (const w of words(question)) {
    const x = named.has(w) ? "_" : w;
    if (!(x === "_" && out[out.length - 1] === "_")) out.push(x);
  }
  const kind = out.join(" ");
  if (kind !== "what is at the _ ?" || answer === undefined) return kind;
  return `${kind} ${sameAnswer(answer, "nothing") ? "(nothing)" : "(an object)"}`;
}

export function sameAnswer(got: string, expected: string): boolean {
  return words(got).join(" ") === words(expected).join(" ");
}

/** Objects named in a description, each with whichever of size, colour, kind and cell it names. */
export function parseDescription(text: string): Partial<SceneObject>[] {
  const found: Partial<SceneObject>[] = [];
  const ws = words(text).filter((w) => w !== "," && w !== ":");
  for (const sentence of ws.join(" ").split(".")) {
    const s = sentence.split(" ").filter(Boolean);
    const o: Partial<SceneObject> = {};
    for (const w of s) {
      if (SIZES.includes(w)) o.size = w;
      else if (COLOURS.includes(w)) o.colour = w;
      else if (KINDS.includes(w)) o.kind = w;
    }
    const at = s.findIndex((w, i) => w === "at" && s[i + 1] === "the");
    if (at >= 0) {
      const two = s.slice(at + 2, at + 4).join(" ");
      const one = s[at + 2];
      const pos = POSITIONS.includes(two) ? two : POSITIONS.includes(one) ? one : undefined;
      if (pos !== undefined) o.cell = POSITIONS.indexOf(pos);
    }
    if (o.kind) found.push(o);
  }
  return found;
}

/** How many of the attributes a description names for one object are the true object's. */
function attributesRight(named: Partial<SceneObject>, t: SceneObject): number {
  return (Object.entries(named) as [keyof SceneObject, string | number][]).filter(([k, v]) => t[k] === v).length;
}

/**
 * Attribute-level counts: correct mentions, all mentions, and the scene's true attributes (4 per object).
 * Each named object is scored against the scene's object at the place it names; a place named again scores
 * nothing the second time (its attributes count as mentioned, never as correct), so repeats cannot add up.
 */
export function descriptionCounts(
  text: string,
  objects: SceneObject[],
): { correct: number; mentioned: number; truth: number } {
  const byCell = new Map(objects.map((o) => [o.cell, o]));
  const scored = new Set<number>();
  let correct = 0;
  let mentioned = 0;
  for (const o of parseDescription(text)) {
    mentioned += Object.keys(o).length;
    const t = o.cell === undefined || scored.has(o.cell) ? undefined : byCell.get(o.cell);
    if (t) correct += attributesRight(o, t);
    if (o.cell !== undefined) scored.add(o.cell);
  }
  return { correct, mentioned, truth: 4 * objects.length };
}

/**
 * The same description scored two more ways, to tell wrong places from wrong attributes
 * (descriptionCounts keys each named object by its place, so an object named right but put at
 * another object's place scores that other object's attributes):
 * - `matched`: attributes right under the best one-to-one pairing of named objects with the
 *   scene's objects, places counted like any other attribute (so a swap of two places costs two
 *   attributes, not six);
 * - `exact`: the scene's objects named with all four attributes right (size, colour, kind, place),
 *   out of `named` objects named and `objects.length` in the scene.
 */
export function descriptionMatch(
  text: string,
  objects: SceneObject[],
): { matched: number; exact: number; named: number } {
  const named = parseDescription(text);
  // At most four objects in a scene: try every pairing (each scene object takes a distinct named one, or none).
  const best = (i: number, used: Set<number>): number => {
    if (i === objects.length) return 0;
    let top = best(i + 1, used);
    named.forEach((o, j) => {
      if (used.has(j)) return;
      used.add(j);
      top = Math.max(top, attributesRight(o, objects[i]) + best(i + 1, used));
      used.delete(j);
    });
    return top;
  };
  const exact = objects.filter((t) =>
    named.some((o) => Object.keys(o).length === 4 && attributesRight(o, t) === 4),
  ).length;
  return { matched: best(0, new Set()), exact, named: named.length };
}
