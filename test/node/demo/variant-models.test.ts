/**
 * The shipped variant models (models/demo-next: LLaVA-NeXT with AnyRes; models/demo-video:
 * LLaVA-NeXT-Video), through the real engine:
 * each agrees with its committed PyTorch fixture (training/parity_variants.py: prompt ids, every
 * pixel of every view, the visual features that replace the placeholder, logits of the full path
 * and of the twig, the greedy description, and the visual tokens TTP, FastV and VisionZip keep
 * at each budget), its answers depend on the picture, and its committed evaluation says TwigVLM
 * on it is lossless with drafts really accepted.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";
import { checkVariantParity, type VariantParityFixture } from "../../../gpu-service/tools/eval/parity-variants.js";
import type { EvalResult } from "../../../gpu-service/tools/eval/run.js";
import { repoRoot } from "../../support/gpu-service.js";

// heavy work for a shared 2-core machine: the limit only catches a hang
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const dataDir = join(repoRoot, "training", "data");
const VARIANTS = [
  { name: "demo-next", variant: "next" as const },
  { name: "demo-video", variant: "video" as const },
];

for (const { name, variant } of VARIANTS) {
  const modelDir = join(repoRoot, "models", name);
  describe(`${name}: the shipped ${variant} variant`, () => {
    it("matches its committed PyTorch fixture on every case: pixels, features, logits, greedy output, kept sets", async () => {
      const fixturePath = join(modelDir, "parity.json");
      const fixture = JSON.parse(readFileSync(fixturePath, "utf8")) as VariantParityFixture;
      expect(fixture.variant).toBe(variant);
      expect(fixture.cases.length).toBeGreaterThanOrEqual(4);
      const results = await checkVariantParity(modelDir, fixture, fixturePath, dataDir);
      expect(results.map((r) => r.id)).toEqual(fixture.cases.map((c) => c.id));
      for (const r of results) {
        expect(r.failures.join("\n"), r.id).toBe("");
        expect(r.keptChecked, r.id).toBeGreaterThan(0);
        expect(r.greedyTokens, r.id).toBeGreaterThan(0);
      }
      if (variant === "next") {
        // landscape, portrait and square pictures among the cases, each with its own number of visual tokens
        const sizes = fixture.cases.map((c) => c.imageSize as [number, number]);
        expect(sizes.some(([h, w]) => w > h)).toBe(true);
        expect(sizes.some(([h, w]) => h > w)).toBe(true);
        expect(sizes.some(([h, w]) => h === w)).toBe(true);
      } else {
        // 4- and 8-frame clips
        const frames = fixture.cases.map((c) => c.images.length);
        expect(frames).toContain(4);
        expect(frames).toContain(8);
      }
    });

    it("answers by the picture: two different test pictures (or clips) get different descriptions", async () => {
      const engine = await LocalEngine.load(modelDir);
      try {
        const split = readFileSync(join(dataDir, `${variant}-test.jsonl`), "utf8")
          .trim()
          .split("\n");
        const describeOne = async (line: string) => {
          const scene = JSON.parse(line) as { image?: string; frames?: string[]; describe: { prompt: string } };
          const read = (path: string) => readFileSync(join(dataDir, path));
          const params = await engine.plan({
            ...(scene.frames ? { video: { frames: scene.frames.map(read) } } : { image: read(scene.image as string) }),
            messages: [{ role: "user", content: scene.describe.prompt }],
            mode: "twig",
            maxTokens: 48,
            temperature: 0,
            topP: 1,
            stop: [],
          });
          // no budget named: the model's own share of this clip's or picture's N where its twig names one
          const own = JSON.parse(readFileSync(join(modelDir, "twig", "config.json"), "utf8")).default_pruned_fraction;
          if (own !== undefined)
            expect(params.plan.retainBudget).toBe(Math.round(params.plan.visualTokens * (1 - own)));
          let text = "";
          await engine.generate(params, (e) => {
            if (e.type === "delta") text += e.text;
          });
          return text;
        };
        const [a, b] = [await describeOne(split[0]), await describeOne(split[1])];
        expect(a.length).toBeGreaterThan(10);
        expect(a).not.toBe(b);
      } finally {
        await engine.close();
      }
    });

    it("has a committed evaluation: every mode at three budgets, twig and ssd-only lossless, drafts accepted", () => {
      const result = JSON.parse(readFileSync(join(modelDir, "eval", "eval.json"), "utf8")) as EvalResult;
      expect(result.split).toBe(`${variant}-test`);
      const labels = result.rows.map((r) => r.label);
      for (const f of ["66.7", "77.8", "88.9"])
        for (const m of ["twig", "ttp-only", "fastv", "random", "visionzip"]) expect(labels).toContain(`${m} @ ${f}%`);
      for (const r of result.rows.filter((x) => x.mode === "twig" || x.mode === "ssd-only")) {
        expect(r.losslessMismatches, r.label).toBe(0);
        expect(r.acceptanceRate, r.label).toBeGreaterThan(0.3);
      }
    });
  });
}
