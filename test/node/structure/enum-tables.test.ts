/**
 * The proto's enums are spelled once, in the tables generated from the contract
 * (proto/gen/twigvlm/v1/names.ts, by proto/enum-names.ts): no list or table in the service, its tools or
 * the edge writes out the mode or scorer names again. A table that says something of each mode (what it
 * prunes, its colour in a chart, a fixture's own names for them) is keyed by the generated type and
 * allowed by name here. The detector first runs on made-up code, so that it could fail.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { MODE_NUMBER, SCORE_SOURCE_NUMBER } from "@twigserve/proto/twigvlm/v1/names.js";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { sourceFiles } from "../../support/source-files.js";

const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));
const MODE_NAMES = new Set(Object.keys(MODE_NUMBER));
const SCORER_NAMES = new Set(Object.keys(SCORE_SOURCE_NUMBER));
/** Tables that say something of each mode, typed by the generated names. */
const ALLOWED = [
  "gpu-service/src/engine/twig/modes.ts", // what each mode prunes and whether it drafts
  "gpu-service/src/engine/pruning/registry.ts", // the pruners by name (four share a mode's name): what modes.ts's table points to
  "gpu-service/tools/eval/report.ts", // each pruning mode's colour
];

/**
 * Array and object literals that name three modes or more, or every scorer, as "line: text" (two modes
 * picked to compare, or a fixture's two selection methods, are a choice, not the enum written out).
 */
function enumTables(source: string): string[] {
  const file = ts.createSourceFile("source.ts", source, ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const names = (nodes: (ts.Node | undefined)[]) =>
    nodes.flatMap((n) => (n !== undefined && (ts.isStringLiteral(n) || ts.isIdentifier(n)) ? [n.text] : []));
  const visit = (node: ts.Node) => {
    let seen: string[] = [];
    if (ts.isArrayLiteralExpression(node)) seen = names([...node.elements]);
    if (ts.isObjectLiteralExpression(node))
      seen = node.properties.flatMap((p) => names([p.name, ts.isPropertyAssignment(p) ? p.initializer : undefined]));
    const modes = new Set(seen.filter((n) => MODE_NAMES.has(n)));
    const scorers = new Set(seen.filter((n) => SCORER_NAMES.has(n)));
    if (modes.size >= 3 || scorers.size === SCORER_NAMES.size)
      found.push(
        `${file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1}: ${node.getText(file).slice(0, 60)}`,
      );
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

describe("the enums' names", () => {
  it("are found in made-up lists and tables, and not in ordinary uses", () => {
    const made = [
      'const MODES = ["twig", "base", "ttp-only"];',
      'const OF = { twig: 1, "ssd-only": 5, fastv: 3 };',
      'const SCORERS = ["last-token", "all-text"];',
      'const M = { ttp: "ttp-only", fv: "fastv", vz: "visionzip" };',
      'const compared = ["base", "twig"];',
      'if (mode === "twig" || mode === "base") go();',
      'const plan = { mode: "twig", draft: null };',
      'const one = ["twig"];',
    ].join("\n");
    expect(enumTables(made).map((f) => f.split(":")[0])).toEqual(["1", "2", "3", "4"]);
  });

  it("are written out nowhere in the service, its tools or the edge but in the generated tables", () => {
    const files = sourceFiles(repoRoot);
    const tables = files.flatMap((file) => {
      if (ALLOWED.includes(file)) return [];
      return enumTables(readFileSync(join(repoRoot, file), "utf8")).map((t) => `${file}:${t}`);
    });
    expect(tables).toEqual([]);
    expect(files.length).toBeGreaterThan(100);
  });

  it("are not written out as a page's options either (the playground asks GET /playground/config)", () => {
    const optionModes = (html: string) =>
      [...html.matchAll(/<option[^>]*value="([^"]*)"/g)].map((m) => m[1]).filter((v) => MODE_NAMES.has(v));
    expect(optionModes('<select><option value="twig">t</option><option value="fastv">f</option></select>')).toEqual([
      "twig",
      "fastv",
    ]);
    const page = readFileSync(join(repoRoot, "edge/public/playground/index.html"), "utf8");
    expect(optionModes(page).length).toBeLessThan(2);
  });
});
