/**
 * The batched decoder segment against the single-sequence one, on the demo model's weights
 * (models/demo, all 32 layers and its LM head) through onnxruntime-node: sequences of different
 * lengths (one of them pruned in place, as TTP prunes a segment's cache) share one run, with
 * different numbers of new rows (a padded multi-row step, a slot with none), then roll back on
 * their own, leave the batch, and a new one joins; each step's hidden states and logits equal
 * every sequence run alone through the existing segment, within float rounding. And prompts
 * prefilled together into new slots after others give each what the single segment gives it
 * alone: hidden states, caches and the attention probabilities TTP and FastV score by.
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runsOf } from "../../../gpu-service/src/engine/batch/prefill.js";
import { loadLlava } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { BatchedSegment, type SlotRows } from "../../../gpu-service/src/engine/runtime/batched-segment.js";
import { DecoderSegment } from "../../../gpu-service/src/engine/runtime/decoder-segment.js";
import type { LayerKv } from "../../../gpu-service/src/engine/runtime/kv-cache.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { randomTensor } from "../../support/random-weights.js";
import { maxRelError } from "../../support/tolerance.js";

const MODEL_DIR = fileURLToPath(new URL("../../../models/demo", import.meta.url));

describe("batched decoder segment (demo model)", () => {
  it("gives each sequence of a batch what the single-sequence segment gives it alone, step after step", async () => {
    const weights = loadLlava(MODEL_DIR);
    const config = weights.config.text;
    const H = config.hiddenSize;
    const V = config.vocabSize;
    const [runtime, single, batched] = await Promise.all([
      LlavaRuntime.create(weights, { threads: 1 }, { fullSegment: false }),
      DecoderSegment.create(config, weights.text.layers, { threads: 1, name: "single" }),
      BatchedSegment.create(config, weights.text.layers, { threads: 1 }),
    ]);
    const rng = new Rng(29);
    const rows = (positions: number[]): SlotRows => ({
      hidden: randomTensor(rng, [positions.length, H], 1).data,
      positions,
    });
    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

    // three sequences, prefilled alone at their own lengths; the second keeps only some of its
    // prompt (non-contiguous positions, as after pruning), the third is pruned in its cache
    const prompts = [rows(range(0, 40)), rows([...range(0, 5), 9, 17, 30, 31, 32]), rows(range(0, 150))];
    const alone: LayerKv[][] = [];
    for (const p of prompts) {
      const caches = single.newCaches();
      await single.run(p.hidden, p.positions, caches, { attentionProbs: false });
      alone.push(caches);
    }
    const cache = batched.newCache();
    alone.forEach((c) => {
      cache.load(cache.add(c[0].length), c);
    });
    const kept = [...range(0, 10), ...range(60, 150)];
    for (const c of alone[2]) c.select(kept);
    cache.select(2, kept);

    /** One batched run against each sequence alone: hidden states and logits agree. */
    const step = async (batch: SlotRows[]) => {
      const out = await batched.run(cache, batch);
      for (let b = 0; b < batch.length; b++) {
        const n = batch[b].positions.length;
        expect(out[b].length).toBe(n * H);
        if (n === 0) continue;
        const want = await single.run(batch[b].hidden, batch[b].positions, alone[b], { attentionProbs: false });
        expect(maxRelError(out[b], want.hidden)).toBeLessThan(1e-4);
        const [got, ref] = [await runtime.logits(out[b]), await runtime.logits(want.hidden)];
        expect(got.length).toBe(n * V);
        expect(maxRelError(got, ref)).toBeLessThan(1e-4);
        expect(cache.lengths[b]).toBe(alone[b][0].length);
      }
    };

    await step([rows([40]), rows([33]), rows([150])]); // one new row each
    await step([rows([41, 42, 43, 44]), rows([34]), rows([151, 152])]); // padded: 4, 1 and 2 rows
    await step([rows([45]), { hidden: new Float32Array(0), positions: [] }, rows([153, 154, 155])]); // a slot with none

    // each rolls back on its own (a rejected draft), then goes on
    for (const [b, keep] of [
      [0, 2],
      [2, 1],
    ]) {
      const to = alone[b][0].length - keep;
      for (const c of alone[b]) c.truncate(to);
      cache.truncate(b, to);
    }
    await step([rows([44]), rows([35, 36, 37]), rows([155])]);

    // the first leaves: the last slot moves into its place; a new, long one joins at the end
    expect(cache.remove(0)).toBe(2);
    alone.splice(0, 1, alone[2]);
    alone.pop();
    const late = rows(range(0, 230));
    const lateCaches = single.newCaches();
    await single.run(late.hidden, late.positions, lateCaches, { attentionProbs: false });
    alone.push(lateCaches);
    cache.load(cache.add(230), lateCaches);
    expect(cache.capacity).toBeGreaterThanOrEqual(230);
    await step([rows([156]), rows([38, 39]), rows([230])]);
    await step([rows([157, 158]), rows([40]), rows([231, 232, 233])]);

    // the caches hold what the single segment's hold
    for (let b = 0; b < 3; b++)
      for (const l of [0, 31]) {
        expect(maxRelError(cache.keys(b, l), alone[b][l].keys())).toBeLessThan(1e-4);
        expect(maxRelError(cache.values(b, l), alone[b][l].values())).toBeLessThan(1e-4);
      }
    await Promise.all([runtime.release(), single.release(), batched.release()]);
  });
});

describe("batched prefill (demo model)", () => {
  it("prefills prompts of different lengths together into new slots, each as the single segment alone, probabilities too", async () => {
    const weights = loadLlava(MODEL_DIR);
    const config = weights.config.text;
    const H = config.hiddenSize;
    const layers = weights.text.layers.slice(0, 3);
    const [single, batched] = await Promise.all([
      DecoderSegment.create(config, layers, { threads: 1, attentionProbsLayer: 2, name: "single" }),
      BatchedSegment.create(config, layers, { threads: 1, attentionProbsLayer: 2 }),
    ]);
    const rng = new Rng(31);
    const rows = (positions: number[]): SlotRows => ({
      hidden: randomTensor(rng, [positions.length, H], 1).data,
      positions,
    });
    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
    const cache = batched.newCache();
    // two sequences already running
    for (const n of [30, 12]) cache.add(n);
    await batched.prefill(cache, [rows(range(0, 30)), rows(range(0, 12))], { from: 0 });
    const before = [0, 1].map((b) => ({ keys: cache.keys(b, 2), values: cache.values(b, 2) }));

    // three join together: 40 rows, 7 rows at non-contiguous positions, 75 rows
    const prompts = [rows(range(0, 40)), rows([0, 1, 2, 9, 17, 30, 31]), rows(range(0, 75))];
    for (const p of prompts) cache.add(p.positions.length);
    const out = await batched.prefill(cache, prompts, { from: 2, attentionProbs: true });
    expect(out.hidden.length).toBe(3);
    expect(out.attentionProbs?.length).toBe(3);
    for (let j = 0; j < 3; j++) {
      const p = prompts[j];
      const n = p.positions.length;
      const alone = single.newCaches();
      const want = await single.run(p.hidden, p.positions, alone);
      expect(maxRelError(out.hidden[j], want.hidden)).toBeLessThan(1e-4);
      expect(out.attentionProbs?.[j].length).toBe(config.numHeads * n * n);
      expect(maxRelError(out.attentionProbs?.[j] as Float32Array, want.attentionProbs as Float32Array)).toBeLessThan(
        1e-4,
      );
      expect(cache.lengths[2 + j]).toBe(n);
      for (const l of [0, 2]) {
        expect(maxRelError(cache.keys(2 + j, l), alone[l].keys())).toBeLessThan(1e-4);
        expect(maxRelError(cache.values(2 + j, l), alone[l].values())).toBeLessThan(1e-4);
      }
    }
    // the running ones were neither read nor written
    expect(cache.lengths.slice(0, 2)).toEqual([30, 12]);
    [0, 1].forEach((b) => {
      expect(Array.from(cache.keys(b, 2))).toEqual(Array.from(before[b].keys));
      expect(Array.from(cache.values(b, 2))).toEqual(Array.from(before[b].values));
    });
    // a prefill takes empty slots only
    await expect(batched.prefill(cache, [rows([40])], { from: 2 })).rejects.toThrow(/not empty/);
    await Promise.all([single.release(), batched.release()]);
  });

  it("puts joiners of very different row counts in runs of their own (runsOf)", () => {
    expect(runsOf([20, 22, 25, 30])).toEqual([[0, 4]]);
    expect(runsOf([20, 22, 160, 165])).toEqual([
      [0, 2],
      [2, 4],
    ]);
    expect(runsOf([160])).toEqual([[0, 1]]);
    expect(runsOf([])).toEqual([]);
    // a run never pads to more than twice its real rows
    const counts = [5, 9, 14, 30, 31, 60, 150, 151, 153];
    for (const [a, b] of runsOf(counts)) {
      const run = counts.slice(a, b);
      expect(Math.max(...run) * run.length).toBeLessThanOrEqual(2 * run.reduce((x, y) => x + y, 0));
    }
  });
});
