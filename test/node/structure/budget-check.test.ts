/**
 * The retain budget is range-checked in one place: planning (gpu-service/src/engine/plan-request.ts),
 * against the request's own N. The R-bar formula (decoding/budget.ts) defines the bounds and asserts its
 * domain; nothing else may compare a budget with bounds, call the bounds' functions or word a refusal of a
 * budget, or a second check with its own bounds and message has crept back in. The edge's check of the
 * JSON field's shape (`retain_budget` a whole number, 1 to 100000: no model's bounds) is not one of these.
 * The detector first runs on made-up code that does each once, so that it could fail.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { sourceFiles } from "../../support/source-files.js";

const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));
/** The formula (it defines the bounds and asserts them) and the one check. */
const ALLOWED = ["gpu-service/src/engine/decoding/budget.ts", "gpu-service/src/engine/plan-request.ts"];

const BOUNDS = new Set(["minRetainBudget", "maxRetainBudget"]);
const BUDGET_NAME = /^(retainBudget|retain_budget)$/;
const REFUSAL = /retain[ _]budget\b.*\boutside\b/;
const COMPARISONS = new Set([
  ts.SyntaxKind.LessThanToken,
  ts.SyntaxKind.LessThanEqualsToken,
  ts.SyntaxKind.GreaterThanToken,
  ts.SyntaxKind.GreaterThanEqualsToken,
]);

/** Each way a source range-checks a retain budget, as "line: what". */
function budgetChecks(source: string): string[] {
  const file = ts.createSourceFile("source.ts", source, ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const at = (node: ts.Node) => file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1;
  const names = (node: ts.Node): string[] => {
    if (ts.isIdentifier(node)) return [node.text];
    if (ts.isPropertyAccessExpression(node)) return [node.name.text];
    if (ts.isParenthesizedExpression(node)) return names(node.expression);
    return [];
  };
  const visit = (node: ts.Node) => {
    if (ts.isCallExpression(node) && names(node.expression).some((n) => BOUNDS.has(n)))
      found.push(`${at(node)}: calls ${names(node.expression)[0]}`);
    if (
      ts.isBinaryExpression(node) &&
      COMPARISONS.has(node.operatorToken.kind) &&
      [...names(node.left), ...names(node.right)].some((n) => BUDGET_NAME.test(n))
    )
      found.push(`${at(node)}: compares ${node.getText(file)}`);
    if (
      (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateExpression(node)) &&
      REFUSAL.test(node.getText(file))
    )
      found.push(`${at(node)}: refuses a budget in its own words`);
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

describe("the retain budget's range check", () => {
  it("is found in made-up code however it is written, and ordinary uses of a budget are not", () => {
    const made = [
      "if (b > maxRetainBudget(shape)) throw new Error('too big');",
      "const lo = budget.minRetainBudget(s);",
      "if (params.retainBudget < 4) refuse();",
      "if (64 >= req.retain_budget) ok();",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: made-up code that words a refusal with a template
      "throw new InvalidRequestError(`retain budget ${b} is outside [${lo}, ${hi}]`);",
      'throw new Error("the retain_budget is outside what the model allows");',
      "const retainBudget = a?.retainBudget || undefined;",
      "const r = keptTokensForBudget(plan.retainBudget, shape);",
      "if (retainBudget === null) keepAll();",
      "if (after <= budget) admit();", // a KV byte budget is no retain budget
    ].join("\n");
    expect(budgetChecks(made).map((f) => f.split(":")[0])).toEqual(["1", "2", "3", "4", "5", "6"]);
  });

  it("happens in planning only (and in the formula that defines it)", () => {
    const files = sourceFiles(repoRoot);
    const checks = files.flatMap((file) => {
      return budgetChecks(readFileSync(join(repoRoot, file), "utf8")).map((c) => `${file}:${c}`);
    });
    const outside = checks.filter((c) => !ALLOWED.some((a) => c.startsWith(`${a}:`)));
    expect(outside).toEqual([]);
    // and the one check is there: the detector sees it where it must
    expect(checks.filter((c) => c.startsWith(`${ALLOWED[1]}:`)).length).toBeGreaterThan(0);
    expect(files.length).toBeGreaterThan(100);
  });
});
