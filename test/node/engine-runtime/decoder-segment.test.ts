/**
 * The ONNX decoder segment against the float64 reference: prefill at non-contiguous
 * positions (as after pruning), a multi-token step, rollback, and another multi-token
 * step; for the contrib attention path (RotaryEmbedding + GroupQueryAttention, fused
 * projections and SkipSimplifiedLayerNormalization), the same without fused projections,
 * the plain-ops path (MatMul/Softmax with an explicit mask, Gather rotary) and the direct
 * path (caches read in place from slot buffers); the paths against each other; and the slot
 * caches across buffer growth, rollback and selection.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { ModelProtoSchema } from "@twigserve/proto/onnx/onnx_pb.js";
import { describe, expect, it } from "vitest";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { decoderSegmentGraph } from "../../../gpu-service/src/engine/onnx/decoder.js";
import { decoderLayersRef, type RefLayerCache } from "../../../gpu-service/src/engine/reference/llama.js";
import { DecoderSegment, type SegmentOptions } from "../../../gpu-service/src/engine/runtime/decoder-segment.js";
import type { SlotKvCache } from "../../../gpu-service/src/engine/runtime/kv-cache.js";
import type { DecoderLayerWeights, TextConfig } from "../../../gpu-service/src/engine/weights.js";
import { randomDecoderLayers, randomTensor, tinyTextConfig } from "../../support/random-weights.js";
import { maxRelError } from "../../support/tolerance.js";

const rows = (flat: Float32Array, width: number) =>
  Array.from({ length: flat.length / width }, (_, i) => Float64Array.from(flat.subarray(i * width, (i + 1) * width)));

describe("decoder segment (ONNX) vs reference", () => {
  const config = tinyTextConfig();
  const rng = new Rng(42);
  const layers = randomDecoderLayers(rng, config);

  const variants: [string, SegmentOptions][] = [
    ["contrib", { attention: "contrib" }],
    ["contrib, unfused projections", { attention: "contrib", fuseProjections: false }],
    ["plain", { attention: "plain" }],
    ["direct", { attention: "direct" }],
    ["direct, unfused projections", { attention: "direct", fuseProjections: false }],
  ];
  it.each(
    variants,
  )("%s: matches on prefill, a multi-token step, and a step after rollback, with attention probabilities", async (_, variant) => {
    await matchesReference(config, layers, variant, rng);
  });

  it("direct, one query head per kv head (no grouping reshapes): matches the reference likewise", async () => {
    const mha = tinyTextConfig({ numKvHeads: 4 });
    await matchesReference(mha, randomDecoderLayers(rng, mha), { attention: "direct" }, rng);
  });

  it.each([
    ["direct", tinyTextConfig()],
    ["direct", tinyTextConfig({ numKvHeads: 4 })],
    ["contrib", tinyTextConfig()],
  ] as const)("%s graph (kv heads %#): its outputs come straight from the nodes that make them, no Identity nodes", (attention, c) => {
    const graph = fromBinary(
      ModelProtoSchema,
      decoderSegmentGraph({ config: c, layers: randomDecoderLayers(new Rng(3), c), attention, attentionProbsLayer: 1 }),
    ).graph;
    const nodes = graph?.node ?? [];
    expect(nodes.filter((n) => n.opType === "Identity")).toEqual([]);
    const made = new Set(nodes.flatMap((n) => n.output));
    const outputs = graph?.output ?? [];
    expect(outputs.length).toBeGreaterThan(0);
    for (const o of outputs) expect(made.has(o.name)).toBe(true);
  });

  it.each([
    "plain",
    "direct",
  ] as const)("contrib and %s attention agree with each other step by step, caches included", async (other) => {
    const [contrib, plain] = await Promise.all(
      (["contrib", other] as const).map((attention) =>
        DecoderSegment.create(config, layers, { attention, attentionProbsLayer: 1, threads: 1 }),
      ),
    );
    const [cc, pc] = [contrib.newCaches(), plain.newCaches()];
    const r = new Rng(7);
    for (const positions of [[0, 1, 4, 6, 7], [8], [9, 10, 11, 12]]) {
      const hidden = randomTensor(r, [positions.length, config.hiddenSize], 1).data;
      const [a, b] = [await contrib.run(hidden, positions, cc), await plain.run(hidden, positions, pc)];
      expect(maxRelError(b.hidden, a.hidden)).toBeLessThan(1e-5);
      expect(maxRelError(b.attentionProbs as Float32Array, a.attentionProbs as Float32Array)).toBeLessThan(1e-5);
      for (const [i, c] of cc.entries()) {
        expect(maxRelError(pc[i].keys(), c.keys())).toBeLessThan(1e-5);
        expect(maxRelError(pc[i].values(), c.values())).toBeLessThan(1e-5);
      }
    }
    await Promise.all([contrib.release(), plain.release()]);
  });

  it.each([
    ["grouped query heads", tinyTextConfig()],
    ["one query head per kv head", tinyTextConfig({ numKvHeads: 4 })],
  ] as const)("direct, outputRows (%s): the last rows and every cache as when all rows are computed", async (_, c) => {
    const w = randomDecoderLayers(new Rng(5), c);
    const [all, last] = await Promise.all(
      [false, true].map((outputRows) => DecoderSegment.create(c, w, { attention: "direct", outputRows, threads: 1 })),
    );
    const inputs = fromBinary(
      ModelProtoSchema,
      decoderSegmentGraph({ config: c, layers: w, attention: "direct", outputRows: true }),
    ).graph?.input.map((i) => i.name);
    expect(inputs).toContain("out_rows");
    const [ac, lc] = [all.newCaches(), last.newCaches()];
    const r = new Rng(11);
    const H = c.hiddenSize;
    // a prompt (out of order positions, as after pruning), a verification of 4 rows, one token, all rows
    for (const [positions, n] of [
      [[0, 1, 2, 5, 8, 9, 10], 1],
      [[11, 12, 13, 14], 3],
      [[15], 1],
      [[16, 17], 2],
    ] as const) {
      const hidden = randomTensor(r, [positions.length, H], 1).data;
      const a = await all.run(hidden, positions, ac, { outputRows: n });
      const b = await last.run(hidden, positions, lc, { outputRows: n });
      expect(a.hidden.length).toBe(n * H);
      expect(b.hidden.length).toBe(n * H);
      expect(maxRelError(b.hidden, a.hidden)).toBeLessThan(1e-5);
      for (const [i, cache] of ac.entries()) {
        expect(lc[i].length).toBe(cache.length);
        expect(maxRelError(lc[i].keys(), cache.keys())).toBeLessThan(1e-6);
        expect(maxRelError(lc[i].values(), cache.values())).toBeLessThan(1e-6);
      }
    }
    await expect(last.run(new Float32Array(2 * H), [18, 19], lc, { outputRows: 3 })).rejects.toThrow(/outputRows 3/);
    await Promise.all([all.release(), last.release()]);
  });

  it("direct attention's slot caches grow, roll back and select like exact caches", async () => {
    const long = tinyTextConfig({ maxPositionEmbeddings: 512 });
    const [contrib, direct] = await Promise.all(
      (["contrib", "direct"] as const).map((attention) =>
        DecoderSegment.create(long, layers, { attention, attentionProbsLayer: 0, threads: 1 }),
      ),
    );
    const [cc, dc] = [contrib.newCaches(), direct.newCaches()];
    const r = new Rng(9);
    const step = async (positions: number[]) => {
      const hidden = randomTensor(r, [positions.length, long.hiddenSize], 1).data;
      const [a, b] = [await contrib.run(hidden, positions, cc), await direct.run(hidden, positions, dc)];
      expect(maxRelError(b.hidden, a.hidden)).toBeLessThan(1e-5);
      expect(maxRelError(b.attentionProbs as Float32Array, a.attentionProbs as Float32Array)).toBeLessThan(1e-5);
      for (const [i, c] of cc.entries()) expect(maxRelError(dc[i].keys(), c.keys())).toBeLessThan(1e-5);
    };
    const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);
    await step(range(0, 100)); // past the first chunk of slots in one prefill
    for (let t = 100; t < 140; t += 5) await step(range(t, 5)); // across the next chunk boundary
    for (const c of [...cc, ...dc]) c.truncate(120);
    await step(range(120, 3));
    const keep = [0, 3, 7, 50, 99, 110, 122];
    for (const c of [...cc, ...dc]) c.select(keep);
    await step(range(200, 4));
    expect(dc.every((c) => c.length === keep.length + 4)).toBe(true);
    // one layer's buffers larger than the others': the segment brings them all to one size
    const slots = dc as SlotKvCache[];
    slots[1].resize(slots[1].capacity + 3 * 64);
    await step(range(210, 2));
    expect(new Set(slots.map((c) => c.capacity)).size).toBe(1);
    await Promise.all([contrib.release(), direct.release()]);
  });
});

async function matchesReference(config: TextConfig, layers: DecoderLayerWeights[], variant: SegmentOptions, rng: Rng) {
  const segment = await DecoderSegment.create(config, layers, { ...variant, attentionProbsLayer: 2, threads: 1 });
  const caches = segment.newCaches();
  const refCaches: RefLayerCache[] = layers.map(() => ({ keys: [], values: [] }));
  const H = config.hiddenSize;

  const steps: { tokens: number; positions: number[]; rollbackTo?: number }[] = [
    { tokens: 7, positions: [0, 1, 2, 5, 8, 9, 10] },
    { tokens: 3, positions: [11, 12, 13] },
    { tokens: 2, positions: [12, 13], rollbackTo: 8 },
  ];
  for (const step of steps) {
    if (step.rollbackTo !== undefined) {
      for (const c of caches) c.truncate(step.rollbackTo);
      for (const c of refCaches) {
        c.keys.length = step.rollbackTo;
        c.values.length = step.rollbackTo;
      }
    }
    const hidden = randomTensor(rng, [step.tokens, H], 1).data;
    const out = await segment.run(hidden, step.positions, caches);
    const ref = decoderLayersRef(config, layers, rows(hidden, H), step.positions, refCaches);
    const expected = Float64Array.from(ref.hidden.flatMap((r) => Array.from(r)));
    expect(maxRelError(out.hidden, expected)).toBeLessThan(1e-4);
    // attention probabilities of layer 2: [heads, S, total]
    const total = caches[2].length;
    const probs = ref.probs[2].flatMap((head) => head.flatMap((row) => row.slice(0, total)));
    expect(out.attentionProbs).toBeDefined();
    expect(maxRelError(out.attentionProbs as Float32Array, probs)).toBeLessThan(1e-4);
    expect(caches.every((c) => c.length === refCaches[0].keys.length)).toBe(true);
  }
  await segment.release();
}
