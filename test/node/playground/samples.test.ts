/**
 * The playground's sample scenes are held-out scenes of the demo model's test
 * split, byte for byte, with that scene's questions (scripts/playground-samples.ts
 * copies them; run it again when the split changes).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../support/gpu-service.js";

const dir = join(repoRoot, "edge", "public", "playground", "samples");
const samples = JSON.parse(readFileSync(join(dir, "samples.json"), "utf8")) as {
  id: string;
  image: string;
  source: string;
  questions: string[];
}[];
const split = new Map(
  readFileSync(join(repoRoot, "training", "data", "test.jsonl"), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as { id: string; image: string; questions: { question: string }[] })
    .map((s) => [s.id, s]),
);

describe("the playground's samples", () => {
  it("are scenes of the test split with their questions", () => {
    expect(samples.length).toBeGreaterThan(0);
    let checked = 0;
    for (const s of samples) {
      const scene = split.get(s.id);
      expect(scene, s.id).toBeDefined();
      expect(s.source).toBe(`training/data/${scene?.image}`);
      expect(readFileSync(join(dir, s.image)).equals(readFileSync(join(repoRoot, s.source)))).toBe(true);
      expect(s.questions.slice(1)).toEqual(scene?.questions.map((q) => q.question));
      checked++;
    }
    expect(checked).toBe(samples.length);
  });
});
