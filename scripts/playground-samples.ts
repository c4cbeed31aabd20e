/**
 * Copies a few held-out scenes of the demo model's test split into the
 * playground's static files (edge/public/playground/samples/): each scene's
 * picture, its questions and what is in it. Run again after the split changes:
 *
 *   npx tsx scripts/playground-samples.ts [--count 4]
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = join(root, "edge", "public", "playground", "samples");
const at = process.argv.indexOf("--count");
const count = at > 0 ? Number(process.argv[at + 1]) : 4;

interface Scene {
  id: string;
  image: string;
  objects: { size: string; colour: string; kind: string; position: string }[];
  questions: { question: string; answer: string }[];
  describe: { prompt: string };
}

const scenes = readFileSync(join(root, "training", "data", "test.jsonl"), "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .slice(0, count)
  .map((l) => JSON.parse(l) as Scene);
mkdirSync(out, { recursive: true });
const samples = scenes.map((s) => {
  const file = `${s.id}.png`;
  copyFileSync(join(root, "training", "data", s.image), join(out, file));
  return {
    id: s.id,
    image: file,
    source: `training/data/${s.image}`,
    truth: s.objects.map((o) => `a ${o.size} ${o.colour} ${o.kind} at the ${o.position}`).join(", "),
    questions: [s.describe.prompt, ...s.questions.map((q) => q.question)],
  };
});
writeFileSync(join(out, "samples.json"), `${JSON.stringify(samples, null, 2)}\n`);
console.log(`wrote ${samples.length} samples to ${out}`);
