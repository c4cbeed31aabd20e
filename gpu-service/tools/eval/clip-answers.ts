/**
 * Scoring the video model's clip descriptions (training/clips.py is the other half of this contract,
 * `description_score`): the first frame's objects, attribute by attribute keyed by place, as a picture's
 * description (descriptionCounts), plus each event named after a "then" (appears, disappears, moves,
 * turns), right when its verb, object (size, colour, shape) and target (a place, a colour) are all right;
 * an event named twice scores once.
 */
import { COLOURS, descriptionCounts, KINDS, POSITIONS, type SceneObject, SIZES, words } from "./scene-answers.js";

/** An object of a clip: its first state, the frames it is in ([start, end)), and its one event, if any. */
export interface ClipObject extends SceneObject {
  start: number;
  end: number;
  /** [frame, cell]: from that frame on it is at that cell. */
  move?: [number, number] | null;
  /** [frame, colour]: from that frame on it has that colour. */
  recolour?: [number, string] | null;
}

const present = (o: ClipObject, f: number) => o.start <= f && f < o.end;

/** Object o as frame f shows it. */
function state(o: ClipObject, f: number): SceneObject {
  return {
    kind: o.kind,
    size: o.size,
    cell: o.move && f >= o.move[0] ? o.move[1] : o.cell,
    colour: o.recolour && f >= o.recolour[0] ? o.recolour[1] : o.colour,
  };
}

/** The objects of frame f, as it shows them. */
export function inFrame(objects: readonly ClipObject[], f: number): SceneObject[] {
  return objects.filter((o) => present(o, f)).map((o) => state(o, f));
}

type ClipEvent = [
  verb: string | null,
  size: string | null,
  colour: string | null,
  kind: string | null,
  target: number | string | null,
];

/** The events a description names after its first "then" (clips.parse_events). */
export function parseEvents(text: string): ClipEvent[] {
  const out: ClipEvent[] = [];
  for (const sentence of words(text).join(" ").split(" then ").slice(1)) {
    const w = sentence.replaceAll(".", " ").split(" ").filter(Boolean);
    const colours = w.filter((x) => COLOURS.includes(x));
    const first = (names: string[]) => w.find((x) => names.includes(x)) ?? null;
    const verb = ["appears", "disappears", "moves", "turns"].find((v) => w.includes(v)) ?? null;
    let target: number | string | null = null;
    if ((verb === "appears" || verb === "moves") && w.slice(w.indexOf(verb)).includes("the")) {
      const rest = w.slice(w.indexOf(verb));
      const place = rest.slice(rest.indexOf("the") + 1).join(" ");
      target = POSITIONS.indexOf(place);
    } else if (verb === "turns" && colours.length > 1) target = colours[1];
    out.push([verb, first(SIZES), first(COLOURS), first(KINDS), target]);
  }
  return out;
}

/** The clip's events as parseEvents names them (clips.true_events). */
export function trueEvents(objects: readonly ClipObject[], frames: number): ClipEvent[] {
  const out: ClipEvent[] = [];
  for (const o of objects) {
    if (o.start) out.push(["appears", o.size, o.colour, o.kind, o.cell]);
    if (o.end < frames) out.push(["disappears", o.size, state(o, o.end - 1).colour, o.kind, null]);
    if (o.move) out.push(["moves", o.size, o.colour, o.kind, o.move[1]]);
    if (o.recolour) out.push(["turns", o.size, o.colour, o.kind, o.recolour[1]]);
  }
  return out;
}

/** (correct, mentioned, truth) of a clip's description, as clips.description_score counts them. */
export function clipDescriptionCounts(
  text: string,
  objects: readonly ClipObject[],
  frames: number,
): { correct: number; mentioned: number; truth: number } {
  const normal = words(text).join(" ");
  const first = descriptionCounts(normal.split(" then ")[0], inFrame(objects, 0));
  const truth = trueEvents(objects, frames).map((e) => JSON.stringify(e));
  const named = parseEvents(normal);
  const right = new Set(named.map((e) => JSON.stringify(e)).filter((e) => truth.includes(e))).size;
  return {
    correct: first.correct + right,
    mentioned: first.mentioned + named.length,
    truth: first.truth + truth.length,
  };
}
