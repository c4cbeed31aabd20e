/**
 * External data: with a low threshold, decoder and head graphs go to a cache directory
 * as model.onnx + model.onnx.data, built once; a second runtime over the same weights
 * reuses the files (not rewritten: same mtimes, no rebuild) and gives the same outputs as
 * the in-memory graphs; other weights or options get their own entries. On the demo
 * model (models/demo) with a test scene.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { loadLlava } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { GraphBuilder } from "../../../gpu-service/src/engine/onnx/graph.js";
import { createGraphSession, graphCacheKey } from "../../../gpu-service/src/engine/runtime/graph-cache.js";
import { LlavaRuntime, type RuntimeOptions } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { ort } from "../../../gpu-service/src/engine/runtime/session.js";
import { fixtureInput, readParityFixture } from "../../../gpu-service/tools/eval/parity.js";
import { repoRoot } from "../../support/gpu-service.js";

// the demo model (and the float64 reference on it) is heavy work for a shared 2-core machine: the
// limit only catches a hang, it is not a speed requirement
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const MODEL_DIR = join(repoRoot, "models", "demo");

const cacheDir = mkdtempSync(join(tmpdir(), "twig-graph-cache-"));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

function snapshot(dir: string): Map<string, number> {
  const files = new Map<string, number>();
  for (const entry of readdirSync(dir)) {
    for (const f of readdirSync(join(dir, entry))) files.set(`${entry}/${f}`, statSync(join(dir, entry, f)).mtimeMs);
  }
  return files;
}

describe("external data cache", () => {
  const weights = loadLlava(MODEL_DIR);
  const fixture = readParityFixture(join(MODEL_DIR, "parity.json"));
  const pixels = fixtureInput(fixture.cases[0], weights.config.imageMean, weights.config.imageStd);
  const inputIds = fixture.cases[0].inputIds;
  const generate = async (o: RuntimeOptions) => {
    const rt = await LlavaRuntime.create(weights, { threads: 1, ...o });
    try {
      const prompt = rt.embedPrompt(inputIds, await rt.encodeImage(pixels));
      const out = await rt.full.run(prompt.hidden, prompt.positions, rt.full.newCaches());
      const logits = await rt.logits(out.hidden);
      const greedy = await rt.generateBase({
        inputIds,
        pixelValues: pixels,
        maxTokens: 8,
        sampling: { temperature: 0, topP: 1 },
      });
      return { logits, ids: greedy.outputIds };
    } finally {
      await rt.release();
    }
  };

  it("writes large graphs once as external data and reuses them, with the in-memory outputs", async () => {
    const inMemory = await generate({});
    expect(readdirSync(cacheDir)).toEqual([]);

    const cached = { graphCacheDir: cacheDir, externalDataThreshold: 0 };
    const first = await generate(cached);
    const entries = readdirSync(cacheDir).sort();
    expect(entries.map((e) => e.replace(/-.*/, ""))).toEqual(["decoder", "lm_head"]);
    for (const e of entries) {
      const model = statSync(join(cacheDir, e, "model.onnx")).size;
      const data = statSync(join(cacheDir, e, "model.onnx.data")).size;
      expect(data).toBeGreaterThan(model); // the weights live in the data file
      expect(readFileSync(join(cacheDir, e, "model.onnx")).includes(Buffer.from("model.onnx.data"))).toBe(true);
    }
    const before = snapshot(cacheDir);

    const second = await generate(cached);
    expect(snapshot(cacheDir)).toEqual(before); // nothing rewritten
    expect(Array.from(first.logits)).toEqual(Array.from(inMemory.logits));
    expect(Array.from(second.logits)).toEqual(Array.from(inMemory.logits));
    expect(second.ids).toEqual(inMemory.ids);

    await generate({ ...cached, precision: "int4" }); // other options: new entries beside the old
    expect(readdirSync(cacheDir).length).toBe(4);
  });

  it("skips building on a cache hit and keys by the weights' bytes", async () => {
    const dir = mkdtempSync(join(cacheDir, "unit-"));
    let builds = 0;
    const w = { shape: [2, 2], data: Float32Array.of(1, 2, 3, 4) };
    const source = (data: Float32Array) => ({
      name: "tiny",
      options: { k: 1 },
      weights: [{ shape: w.shape, data }],
      build: () => {
        builds++;
        const g = new GraphBuilder("tiny");
        const x = g.input("x", "float32", [1, 2]);
        g.output(g.op("MatMul", [x, g.weight("w", [2, 2], data)])[0], "y", "float32", [1, 2]);
        return g;
      },
    });
    const opts = { graphCacheDir: dir, externalDataThreshold: 0 };
    const run = async (data: Float32Array) => {
      const s = await createGraphSession(source(data), opts);
      const y = (await s.run({ x: new ort.Tensor("float32", Float32Array.of(1, 1), [1, 2]) })).y.data;
      await s.release();
      return Array.from(y as Float32Array);
    };
    expect(await run(w.data)).toEqual([4, 6]);
    expect(await run(w.data)).toEqual([4, 6]);
    expect(builds).toBe(1);
    const other = Float32Array.of(1, 2, 3, 5);
    expect(graphCacheKey(source(other))).not.toBe(graphCacheKey(source(w.data)));
    expect(await run(other)).toEqual([4, 7]);
    expect(builds).toBe(2);
  });
});
