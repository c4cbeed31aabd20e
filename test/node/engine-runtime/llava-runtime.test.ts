/**
 * The whole model on the tiny random LLaVA: prefill logits against the float64
 * reference (vision + projector + decoder + head), and greedy decoding with KV
 * caches against decoding that recomputes the whole sequence every step.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { argmax, Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { decoderLayersRef, logitsRef } from "../../../gpu-service/src/engine/reference/llama.js";
import { visionRef } from "../../../gpu-service/src/engine/reference/vision.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { randomLlavaWeights, randomTensor } from "../../support/random-weights.js";
import { maxRelError } from "../../support/tolerance.js";

describe("LlavaRuntime on a tiny random model", () => {
  const weights = randomLlavaWeights(11);
  const S = weights.config.vision.imageSize;
  const pixels = randomTensor(new Rng(5), [1, 3, S, S], 2).data;
  const img = weights.config.imageTokenIndex;
  const inputIds = [1, 5, 9, img, 12, 7, 3];
  let runtime: LlavaRuntime;

  beforeAll(async () => {
    runtime = await LlavaRuntime.create(weights, { threads: 1 });
  });
  afterAll(() => runtime?.release());

  it("matches the reference forward on the prefill logits", async () => {
    const features = await runtime.encodeImage(pixels);
    const prompt = runtime.embedPrompt(inputIds, features);
    expect(prompt.numVisual).toBe(16);
    expect(prompt.positions.length).toBe(inputIds.length - 1 + 16);
    const out = await runtime.full.run(prompt.hidden, prompt.positions, runtime.full.newCaches());
    const logits = await runtime.logits(out.hidden);

    const cfg = weights.config.text;
    const emb = (id: number) =>
      Float64Array.from(weights.text.embedTokens.data.subarray(id * cfg.hiddenSize, (id + 1) * cfg.hiddenSize));
    const rows = [...inputIds.slice(0, 3).map(emb), ...visionRef(weights, pixels), ...inputIds.slice(4).map(emb)];
    const ref = decoderLayersRef(
      cfg,
      weights.text.layers,
      rows,
      prompt.positions,
      weights.text.layers.map(() => ({ keys: [], values: [] })),
    );
    const refLogits = ref.hidden.flatMap((h) => Array.from(logitsRef(cfg, weights.text.norm, weights.text.lmHead, h)));
    expect(maxRelError(logits, refLogits)).toBeLessThan(1e-4);
  });

  it("decodes greedily with KV caches exactly as without them", async () => {
    const cached = await runtime.generateBase({
      inputIds,
      pixelValues: pixels,
      maxTokens: 12,
      sampling: { temperature: 0, topP: 1 },
    });
    // without caches: the whole sequence again at every step
    const prompt = runtime.embedPrompt(inputIds, await runtime.encodeImage(pixels));
    const H = weights.config.text.hiddenSize;
    const uncached: number[] = [];
    let hidden = prompt.hidden;
    while (uncached.length < cached.outputIds.length + (cached.finishReason === "stop" ? 1 : 0)) {
      const positions = Array.from({ length: hidden.length / H }, (_, i) => i);
      const out = await runtime.full.run(hidden, positions, runtime.full.newCaches());
      const id = argmax(await runtime.lastLogits(out.hidden));
      uncached.push(id);
      const next = new Float32Array(hidden.length + H);
      next.set(hidden);
      next.set(runtime.embed([id]), hidden.length);
      hidden = next;
    }
    const expected =
      cached.finishReason === "stop" ? [...cached.outputIds, weights.config.text.eosTokenId] : cached.outputIds;
    expect(cached.outputIds.length).toBeGreaterThan(0);
    expect(uncached).toEqual(expected);
  });

  it("samples reproducibly from a seed", async () => {
    const run = (seed: number) =>
      runtime.generateBase({
        inputIds,
        pixelValues: pixels,
        maxTokens: 10,
        sampling: { temperature: 1, topP: 0.9 },
        seed,
      });
    const [a, b] = [await run(3), await run(3)];
    expect(a.outputIds).toEqual(b.outputIds);
  });

  it("stops at max tokens and honours an abort between steps", async () => {
    const r = await runtime.generateBase({
      inputIds,
      pixelValues: pixels,
      maxTokens: 3,
      sampling: { temperature: 1, topP: 1 },
      seed: 1,
    });
    expect(r.outputIds.length).toBeLessThanOrEqual(3);
    const ctrl = new AbortController();
    ctrl.abort();
    await expect(
      runtime.generateBase({
        inputIds,
        pixelValues: pixels,
        maxTokens: 5,
        sampling: { temperature: 0, topP: 1 },
        signal: ctrl.signal,
      }),
    ).rejects.toThrow();
  });
});
