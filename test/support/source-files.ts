/**
 * The source files of the repository's code folders (TypeScript and JavaScript, no declarations, no
 * node_modules), repository-relative: what the structure tests read.
 */
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

/** The code folders the structure tests read: the service, its tools, the edge (and its page), the scripts. */
export const CODE_FOLDERS = ["gpu-service/src", "gpu-service/tools", "edge/src", "edge/public", "scripts"];

/** Every source file under `folders` of `repoRoot`, as `/`-separated repository-relative paths. */
export function sourceFiles(repoRoot: string, folders: readonly string[] = CODE_FOLDERS): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      if (name === "node_modules") return [];
      if (statSync(path).isDirectory()) return walk(path);
      return /\.(ts|mjs|js)$/.test(name) && !name.endsWith(".d.ts") ? [path] : [];
    });
  return folders.flatMap((f) => walk(join(repoRoot, f))).map((p) => relative(repoRoot, p).split("\\").join("/"));
}
