/**
 * Copies a few held-out scenes of the demo model's test split into the
 * playground's static files (edge/public/playground/samples/): each scene's
 * picture, its questions and what is in it; and a few held-out clips of the
 * video model's test split, each as its frames (the PNGs its MP4 and WebM were
 * made from), with its questions and its reference description. Run again
 * after a split changes:
 *
 *   npx tsx scripts/playground-samples.ts [--count 4] [--clips 3]
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = join(root, "edge", "public", "playground", "samples");
const option = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const count = option("--count", 4);
const clips = option("--clips", 3);

interface Scene {
  id: string;
  image: string;
  objects: { size: string; colour: string; kind: string; position: string }[];
  questions: { question: string; answer: string }[];
  describe: { prompt: string };
}

interface Clip {
  id: string;
  frames: string[];
  questions: { question: string; answer: string }[];
  describe: { prompt: string; reference: string };
}

const firstLines = <T>(file: string, n: number) =>
  readFileSync(join(root, "training", "data", file), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(0, n)
    .map((l) => JSON.parse(l) as T);

mkdirSync(out, { recursive: true });
const pictures = firstLines<Scene>("test.jsonl", count).map((s) => {
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
const videos = firstLines<Clip>("video-test.jsonl", clips).map((c) => {
  mkdirSync(join(out, c.id), { recursive: true });
  const frames = c.frames.map((f, i) => {
    const file = `${c.id}/${String(i).padStart(2, "0")}.png`;
    copyFileSync(join(root, "training", "data", f), join(out, file));
    return file;
  });
  return {
    id: c.id,
    // a clip is sent as its frames, in order (the API's video part); its first frame stands for it
    image: frames[0],
    frames,
    sources: c.frames.map((f) => `training/data/${f}`),
    truth: c.describe.reference,
    questions: [c.describe.prompt, ...c.questions.map((q) => q.question)],
  };
});
const samples = [...pictures, ...videos];
writeFileSync(join(out, "samples.json"), `${JSON.stringify(samples, null, 2)}\n`);
console.log(`wrote ${pictures.length} pictures and ${videos.length} clips to ${out}`);
