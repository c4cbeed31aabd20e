/**
 * KV memory stays put while decoding: a request reserves its slots once, and after that no
 * decoding step allocates a KV buffer (counted through tensor-io.ts's `allocateKv`, the one
 * place KV buffers come from), in every mode that drafts, prunes or does neither. Rollback and
 * in-order pruning keep the same buffers; the slot mask follows the held length.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import type { Mode } from "../../../gpu-service/src/engine/plan.js";
import { SlotKvCache } from "../../../gpu-service/src/engine/runtime/kv-cache.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { probe } from "../../../gpu-service/src/engine/runtime/tensor-io.js";
import { TwigDecoder } from "../../../gpu-service/src/engine/twig/twig-decoder.js";
import { growTwig } from "../../../gpu-service/tools/make-tiny/grow-twig.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";

const weights = randomLlavaWeights(31, { numLayers: 8, maxPositionEmbeddings: 128 });
const img = weights.config.imageTokenIndex;
const S = weights.config.vision.imageSize;
const pixels = randomTensor(new Rng(3), [1, 3, S, S], 2).data;

describe("decoding allocates no KV buffer after the prefill (direct attention)", () => {
  let runtime: LlavaRuntime;
  let decoder: TwigDecoder;
  beforeAll(async () => {
    runtime = await LlavaRuntime.create(weights, { threads: 1, attention: "direct" }, { fullSegment: false });
    decoder = await TwigDecoder.create(runtime, growTwig(weights, 2, 2, 6));
  });
  afterAll(async () => {
    await decoder.release();
    await runtime.release();
  });

  const modes: Mode[] = ["base", "ttp-only", "twig", "ssd-only"];
  it.each(modes)("%s: the allocation count does not move from the first token to the last", async (mode) => {
    const counts: number[] = [];
    const r = await decoder.generate({
      inputIds: [1, 5, img, 9, 4, 7],
      pixelValues: pixels,
      plan: decoder.plan({ mode }),
      maxTokens: 60,
      sampling: { temperature: 0, topP: 1 },
      onTokens: (ids) => {
        for (const _ of ids) counts.push(probe.kvAllocations);
        return true;
      },
    });
    const steps = r.outputIds.length;
    expect(steps).toBeGreaterThan(50); // prompt (21 rows) and answer together cross the 64 slots a cache starts with
    expect(counts).toHaveLength(steps);
    expect(counts[0]).toBeGreaterThan(0); // the reservation happened, and was counted
    expect(new Set(counts).size).toBe(1);
  });
});

describe("SlotKvCache keeps its buffers", () => {
  const kv = 2;
  const hd = 4;
  const rows = (s: number, base: number) => Float32Array.from({ length: s * kv * hd }, (_, i) => base + i);

  it("appends keys as [kvHeads, headDim, S] and values as [kvHeads, S, headDim] (the graph's outputs), one token or many", () => {
    for (const s of [1, 3, 12]) {
      const c = new SlotKvCache(kv, hd, 64);
      c.append(rows(2, 0), rows(2, 0)); // two positions held before
      const keyT = Float32Array.from({ length: kv * hd * s }, (_, i) => 1000 + i);
      const value = Float32Array.from({ length: kv * s * hd }, (_, i) => 5000 + i);
      c.append(keyT, value);
      const n = 2 + s;
      const [keys, values] = [c.keys(), c.values()]; // [kv, n, hd]
      let checked = 0;
      for (let h = 0; h < kv; h++)
        for (let t = 0; t < s; t++)
          for (let d = 0; d < hd; d++) {
            expect(keys[(h * n + 2 + t) * hd + d]).toBe(keyT[(h * hd + d) * s + t]);
            expect(values[(h * n + 2 + t) * hd + d]).toBe(value[(h * s + t) * hd + d]);
            checked++;
          }
      expect(checked).toBe(kv * s * hd);
    }
  });

  it("appends, rolls back and prunes in order inside the reserved slots without a new buffer", () => {
    const c = new SlotKvCache(kv, hd, 64);
    const before = probe.kvAllocations;
    const { keyT, value } = c;
    c.append(rows(10, 0), rows(10, 1000));
    c.truncate(7);
    c.append(rows(3, 500), rows(3, 1500));
    const expectedKeys = c.keys();
    const keep = [1, 4, 8, 9];
    c.select(keep);
    expect(c.keyT).toBe(keyT);
    expect(c.value).toBe(value);
    expect(probe.kvAllocations).toBe(before);
    // pruning kept exactly the chosen positions, in order: [kv, n, hd]
    const kept = c.keys();
    let checked = 0;
    for (let h = 0; h < kv; h++)
      keep.forEach((p, j) => {
        for (let d = 0; d < hd; d++) {
          expect(kept[(h * keep.length + j) * hd + d]).toBe(expectedKeys[(h * 10 + p) * hd + d]);
          checked++;
        }
      });
    expect(checked).toBe(kv * keep.length * hd);
    // the mask lets exactly the held slots through
    const mask = c.mask();
    expect(mask.slice(0, 4).every((x) => x === 0)).toBe(true);
    expect(mask.slice(4).every((x) => x === Number.NEGATIVE_INFINITY)).toBe(true);
  });

  it("prunes out of order through new buffers, with the same result as reading the positions", () => {
    const c = new SlotKvCache(kv, hd, 64);
    c.append(rows(6, 0), rows(6, 100));
    const keys = c.keys();
    const values = c.values();
    const keep = [5, 0, 3];
    c.select(keep);
    const k2 = c.keys();
    const v2 = c.values();
    let checked = 0;
    for (let h = 0; h < kv; h++)
      keep.forEach((p, j) => {
        for (let d = 0; d < hd; d++) {
          expect(k2[(h * 3 + j) * hd + d]).toBe(keys[(h * 6 + p) * hd + d]);
          expect(v2[(h * 3 + j) * hd + d]).toBe(values[(h * 6 + p) * hd + d]);
          checked++;
        }
      });
    expect(checked).toBe(kv * 3 * hd);
    expect(
      c
        .mask()
        .slice(0, 3)
        .every((x) => x === 0),
    ).toBe(true);
    expect(c.mask()[3]).toBe(Number.NEGATIVE_INFINITY);
  });
});
