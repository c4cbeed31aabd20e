/**
 * The playground's samples are held-out scenes of the demo model's test split
 * and held-out clips of the video model's, byte for byte (a clip as its
 * frames), each with its questions (scripts/playground-samples.ts copies them;
 * run it again when a split changes).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../support/gpu-service.js";

const dir = join(repoRoot, "edge", "public", "playground", "samples");
const samples = JSON.parse(readFileSync(join(dir, "samples.json"), "utf8")) as {
  id: string;
  image: string;
  source?: string;
  frames?: string[];
  sources?: string[];
  truth: string;
  questions: string[];
}[];

interface Held {
  id: string;
  image?: string;
  frames?: string[];
  questions: { question: string }[];
  describe: { prompt: string; reference?: string };
}
const split = (file: string) =>
  new Map(
    readFileSync(join(repoRoot, "training", "data", file), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as Held)
      .map((s) => [s.id, s]),
  );
const same = (a: string, b: string) => readFileSync(a).equals(readFileSync(b));

describe("the playground's samples", () => {
  it("are scenes of the test split with their questions", () => {
    const scenes = split("test.jsonl");
    const pictures = samples.filter((s) => !s.frames);
    expect(pictures.length).toBeGreaterThan(0);
    let checked = 0;
    for (const s of pictures) {
      const scene = scenes.get(s.id);
      expect(scene, s.id).toBeDefined();
      expect(s.source).toBe(`training/data/${scene?.image}`);
      expect(same(join(dir, s.image), join(repoRoot, s.source as string))).toBe(true);
      expect(s.questions.slice(1)).toEqual(scene?.questions.map((q) => q.question));
      checked++;
    }
    expect(checked).toBe(pictures.length);
  });

  it("are clips of the video test split, as their frames, with their questions and description", () => {
    const clips = split("video-test.jsonl");
    const videos = samples.filter((s) => s.frames);
    expect(videos.length).toBeGreaterThan(0);
    let checked = 0;
    for (const s of videos) {
      const clip = clips.get(s.id);
      expect(clip, s.id).toBeDefined();
      expect(s.sources).toEqual(clip?.frames?.map((f) => `training/data/${f}`));
      expect(s.frames).toHaveLength(clip?.frames?.length ?? -1);
      for (const [i, f] of (s.frames ?? []).entries())
        expect(same(join(dir, f), join(repoRoot, (s.sources ?? [])[i])), f).toBe(true);
      expect(s.image).toBe(s.frames?.[0]);
      expect(s.truth).toBe(clip?.describe.reference);
      expect(s.questions).toEqual([clip?.describe.prompt, ...(clip?.questions.map((q) => q.question) ?? [])]);
      checked++;
    }
    expect(checked).toBe(videos.length);
  });
});
