/**
 * The README's code blocks, each with the marker comment on the line before it
 * (blank lines may come between) that says what to do with it:
 *
 *   <!-- example: run NAME -->     run it against the real stack; the test's checker NAME says what it must show
 *   <!-- example: shape NAME -->   a JSON fragment; checker NAME holds it against real answers
 *   <!-- example: skip REASON -->  shown, not run (a synopsis, or needs what a test cannot have)
 *
 * A block without a marker is an error, so a new example is either checked or
 * says why not. Examples are written for `npm start` on this machine; to run
 * them against a stack on other ports, `localize` substitutes the host, the
 * ports and the file of local secrets the examples read (edge/.dev.vars, which
 * npm start writes; the test writes its own) and gives /tmp/ a fresh
 * directory, nothing else.
 */

export type ExampleKind = "run" | "shape" | "skip";

export interface Example {
  /** 1-based line of the opening fence. */
  line: number;
  /** The fence's language (sh, ts, json, ...), "" if none. */
  lang: string;
  code: string;
  kind: ExampleKind;
  /** The checker's name (run, shape) or the reason (skip). */
  name: string;
}

const MARKER = /^<!-- example: (run|shape|skip) (.+?) -->$/;
const FENCE = /^(```+)\s*([\w-]*)\s*$/;

/** Every fenced code block of `markdown` with its marker; throws naming the line of a block without one. */
export function extractExamples(markdown: string): Example[] {
  const lines = markdown.split("\n");
  const out: Example[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]);
    if (!open) continue;
    let end = i + 1;
    while (end < lines.length && lines[end].trim() !== open[1]) end++;
    if (end >= lines.length) throw new Error(`README.md line ${i + 1}: a code block that never closes`);
    let before = i - 1;
    while (before >= 0 && lines[before].trim() === "") before--;
    const marker = before >= 0 ? MARKER.exec(lines[before].trim()) : null;
    if (!marker)
      throw new Error(
        `README.md line ${i + 1}: a code block without an "<!-- example: run|shape|skip ... -->" line before it`,
      );
    out.push({
      line: i + 1,
      lang: open[2],
      code: lines.slice(i + 1, end).join("\n"),
      kind: marker[1] as ExampleKind,
      name: marker[2],
    });
    i = end;
  }
  return out;
}

/** Where the README's examples point (`npm start`'s defaults, edge/.dev.vars) and what a test's stack has instead. */
export interface Localization {
  edgeUrl: string;
  gpuUrl: string;
  /** A file like edge/.dev.vars holding the stack's dev key and admin token. */
  devVars: string;
  /** A fresh directory standing in for /tmp. */
  tmp: string;
}

export const README_EDGE = "http://127.0.0.1:8787";
export const README_GPU = "http://127.0.0.1:50651";
export const README_DEV_VARS = "edge/.dev.vars";

/** The example with the host, ports and secrets file of `to`, and /tmp/ replaced by a fresh directory: nothing else changes. */
export function localize(code: string, to: Localization): string {
  return code
    .replaceAll(README_EDGE, to.edgeUrl)
    .replaceAll(README_GPU, to.gpuUrl)
    .replaceAll("/tmp/", `${to.tmp}/`)
    .replaceAll(README_DEV_VARS, to.devVars);
}
