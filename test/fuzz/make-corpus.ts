/**
 * Writes the edge fuzz test's corpus (test/fuzz/corpus.ts) into
 * test/fuzz/corpus/, with its index corpus.json:
 *
 *   npx tsx test/fuzz/make-corpus.ts
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { corpusFiles } from "./corpus.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "corpus");
rmSync(dir, { recursive: true, force: true });
const files = corpusFiles();
for (const { entry, bytes } of files) {
  mkdirSync(dirname(join(dir, entry.file)), { recursive: true });
  writeFileSync(join(dir, entry.file), bytes);
}
writeFileSync(
  join(dir, "corpus.json"),
  `${JSON.stringify(
    files.map((f) => f.entry),
    null,
    2,
  )}\n`,
);
console.log(`wrote ${files.length} files to ${dir}`);
