/**
 * The import graph of a tree of TypeScript (and .mjs) sources, read with TypeScript's own parser:
 * imports and re-exports, `import()` calls and `import("…")` types all count. Each edge says
 * whether it is only about types (`import type`, `export type`, `import("…")` in a type): such an
 * import is erased and loads nothing when the code runs. Relative imports are resolved to
 * repository-relative files (`./x.js` to `x.ts` where that exists); anything else stays as
 * written (a package, `node:fs`). For the tests that check which folder may import which.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";

/** One import: a repository-relative file or a package specifier, and whether it is erased at run time. */
export interface ImportEdge {
  to: string;
  typeOnly: boolean;
}

/** File (repository-relative, `/`-separated) -> its imports. */
export type ImportGraph = Map<string, ImportEdge[]>;

/** Every module a source names, in order, as written. */
export function importsOf(source: string): { specifier: string; typeOnly: boolean }[] {
  const file = ts.createSourceFile("source.ts", source, ts.ScriptTarget.Latest, true);
  const found: { specifier: string; typeOnly: boolean }[] = [];
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      // under verbatimModuleSyntax only `import type` is erased; `import { type A }` still loads the module
      found.push({ specifier: node.moduleSpecifier.text, typeOnly: node.importClause?.isTypeOnly === true });
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push({ specifier: node.moduleSpecifier.text, typeOnly: node.isTypeOnly });
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments.length > 0 &&
      ts.isStringLiteral(node.arguments[0])
    ) {
      found.push({ specifier: node.arguments[0].text, typeOnly: false });
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      found.push({ specifier: node.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

/** Reads every .ts and .mjs file (not .d.ts) under `folders` (repository-relative) into a graph. */
export function readImportGraph(repoRoot: string, folders: string[]): ImportGraph {
  const graph: ImportGraph = new Map();
  for (const folder of folders) {
    for (const file of sourcesUnder(join(repoRoot, folder))) {
      graph.set(
        toRepoPath(repoRoot, file),
        importsOf(readFileSync(file, "utf8")).map(({ specifier, typeOnly }) => ({
          to: specifier.startsWith(".") ? resolveRelative(repoRoot, file, specifier) : specifier,
          typeOnly,
        })),
      );
    }
  }
  return graph;
}

/** Import loops among the graph's own files (type-only imports count), each as a path that ends where it starts. */
export function findCycles(graph: ImportGraph): string[][] {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const { to } of graph.get(node) ?? []) {
      if (!graph.has(to)) continue;
      if (state.get(to) === "open") cycles.push([...stack.slice(stack.indexOf(to)), to]);
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

/**
 * The shortest chain of imports that load at run time (type-only ones left out) from `start` to
 * something `target` accepts, or undefined when there is none.
 */
export function runtimeChain(
  graph: ImportGraph,
  start: string,
  target: (name: string) => boolean,
): string[] | undefined {
  const cameFrom = new Map<string, string>();
  const queue = [start];
  const seen = new Set(queue);
  while (queue.length > 0) {
    const node = queue.shift() as string;
    for (const { to, typeOnly } of graph.get(node) ?? []) {
      if (typeOnly || seen.has(to)) continue;
      seen.add(to);
      cameFrom.set(to, node);
      if (target(to)) {
        const chain = [to];
        for (let at = to; at !== start; ) {
          at = cameFrom.get(at) as string;
          chain.unshift(at);
        }
        return chain;
      }
      queue.push(to);
    }
  }
  return undefined;
}

function sourcesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (name === "node_modules") continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourcesUnder(path));
    else if (/\.(ts|mjs)$/.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

function resolveRelative(repoRoot: string, file: string, specifier: string): string {
  let target = resolve(dirname(file), specifier);
  if (target.endsWith(".js") && existsSync(`${target.slice(0, -3)}.ts`)) target = `${target.slice(0, -3)}.ts`;
  if (!existsSync(target)) throw new Error(`${toRepoPath(repoRoot, file)} imports ${specifier}, which does not exist`);
  return toRepoPath(repoRoot, target);
}

function toRepoPath(repoRoot: string, file: string): string {
  return relative(repoRoot, file).split("\\").join("/");
}
