/**
 * An engine loaded with `releaseWeights` (as the service loads its workers): once every session
 * exists, the fp32 weights it was built from are freed, so the model is in memory once, as ONNX
 * Runtime holds it. On a tiny model with a twig (one request at a time, and batching) and one
 * without: the same tokens as an engine that keeps its weights, in every mode tried; every weight
 * tensor but the token embeddings then holds nothing; asking for the weights or for a new segment
 * fails with a clear error. (How much memory this saves on a large model: README, "Benchmarks".)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import { writeTinyModel } from "../../../gpu-service/tools/make-tiny/tiny-model.js";

const dir = mkdtempSync(join(tmpdir(), "twig-release-"));
const bare = mkdtempSync(join(tmpdir(), "twig-release-bare-"));
let png: Uint8Array;
const engines: LocalEngine[] = [];

beforeAll(async () => {
  writeTinyModel(dir, 11, "hf");
  writeTinyModel(bare, 11, "hf");
  rmSync(join(bare, "twig"), { recursive: true }); // the same model without a twig
  const raw = Buffer.alloc(40 * 30 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 53) % 251;
  png = await sharp(raw, { raw: { width: 40, height: 30, channels: 3 } })
    .png()
    .toBuffer();
}, 60_000);
afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
  rmSync(dir, { recursive: true, force: true });
  rmSync(bare, { recursive: true, force: true });
});

async function load(modelDir: string, opts: Parameters<typeof LocalEngine.load>[1]): Promise<LocalEngine> {
  const e = await LocalEngine.load(modelDir, { threads: 1, ...opts });
  engines.push(e);
  return e;
}

async function tokens(engine: LocalEngine, mode: Mode): Promise<number[]> {
  const params = await engine.plan({
    image: png,
    messages: [{ role: "user", content: "what colour is the circle ?" }],
    maxTokens: 16,
    temperature: 0,
    topP: 1,
    stop: [],
    mode,
  });
  const ids: number[] = [];
  await engine.generate(params, (e) => {
    if (e.type === "delta") ids.push(...e.tokenIds);
  });
  return ids;
}

/** The Float32Arrays an object tree holds (each once), by their lengths. */
function arrays(root: unknown): Float32Array[] {
  const out: Float32Array[] = [];
  const seen = new Set<unknown>();
  const walk = (x: unknown) => {
    if (typeof x !== "object" || x === null || seen.has(x)) return;
    seen.add(x);
    if (x instanceof Float32Array) out.push(x);
    else if (!ArrayBuffer.isView(x)) for (const v of Object.values(x)) walk(v);
  };
  walk(root);
  return out;
}

describe("an engine that releases its weights once loaded", () => {
  for (const [name, modelDir, maxBatch, modes] of [
    ["with a twig, one request at a time", dir, 1, ["twig", "ttp-only", "base", "fastv"]],
    ["with a twig, batching", dir, 4, ["twig", "ttp-only", "base", "fastv"]],
    ["without a twig", bare, 1, ["base"]],
    ["without a twig, batching", bare, 4, ["base"]],
  ] as const) {
    it(`answers as one that keeps them (${name}) and holds no weight but the embeddings`, async () => {
      const kept = await load(modelDir, { maxBatch });
      const released = await load(modelDir, { maxBatch, releaseWeights: true });
      for (const mode of modes) {
        const a = await tokens(kept, mode);
        expect(a.length, mode).toBeGreaterThan(0);
        expect(await tokens(released, mode), mode).toEqual(a);
      }
      const runtime = (
        released as unknown as { runtime: { weights: { text: { embedTokens: { data: Float32Array } } } } }
      ).runtime;
      const left = arrays(runtime.weights).filter((x) => x.length > 0);
      expect(left).toEqual([runtime.weights.text.embedTokens.data]);
      expect(arrays(kept.weights).filter((x) => x.length > 0).length).toBeGreaterThan(20);
      expect(() => released.weights).toThrow(/releaseWeights/);
      await expect(
        (released as unknown as { runtime: { segment: (a: number, b: number) => Promise<unknown> } }).runtime.segment(
          0,
          2,
        ),
      ).rejects.toThrow(/released/);
    });
  }
});
