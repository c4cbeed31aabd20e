/**
 * `npm run bench -- twig`: every mode on the same requests in one run, on a
 * random-weight model (hidden 512, 16 layers, K=2, T=3, K_f=12 by default):
 * time to first token, tokens per second and speed relative to `base`; and
 * the cost of a draft step and of verifying n drafts as fractions of a full
 * decoding step, which fix the speedup a given acceptance rate can buy.
 * Random weights accept almost no drafts, so the mode table shows SSD's
 * overhead here, not its gain.
 */
import { Rng } from "../engine/decoding/sampling.js";
import { LlavaRuntime } from "../engine/runtime/llava-runtime.js";
import { randomLlavaWeights, randomTensor } from "../engine/tiny-model.js";
import { growTwig } from "../engine/twig/grow.js";
import { TwigDecoder } from "../engine/twig/twig-decoder.js";
import type { Mode } from "../engine/types.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function benchTwig(args: {
  hidden: number;
  layers: number;
  threads: number;
  tokens: number;
  reps: number;
}): Promise<void> {
  const heads = Math.max(1, args.hidden / 64);
  const weights = randomLlavaWeights(1, {
    hiddenSize: args.hidden,
    intermediateSize: Math.round((args.hidden * 11) / 4),
    numLayers: args.layers,
    numHeads: heads,
    numKvHeads: heads,
    maxPositionEmbeddings: 512,
    vocabSize: 2000,
  });
  weights.config.imageTokenIndex = 1999;
  const kf = Math.floor((3 * args.layers) / 4);
  const runtime = await LlavaRuntime.create(weights, { threads: args.threads });
  const twig = growTwig(weights, 2, 3, kf);
  const decoder = await TwigDecoder.create(runtime, twig);
  const S = weights.config.vision.imageSize;
  const pixels = randomTensor(new Rng(3), [1, 3, S, S], 1).data;
  const inputIds = [1, ...Array.from({ length: 30 }, (_, i) => 10 + i), 1999, 50, 51, 52, 53];
  console.log(
    `bench twig: hidden ${args.hidden}, ${args.layers} layers, K=2, T=3, K_f=${kf}, ${runtime.numVisualTokens} visual tokens, ${args.tokens} new tokens, ${args.threads} threads, random weights`,
  );

  // costs of the pieces, as fractions of a full decoding step (direct timing of the segments)
  const lowerCost = await decoder.stepCosts(inputIds, pixels, args.reps);
  console.log("  piece                         ms     / full step");
  for (const [name, ms] of Object.entries(lowerCost))
    console.log(
      `  ${name.padEnd(28)} ${ms.toFixed(2).padStart(6)}   ${(ms / lowerCost["full step (1 token)"]).toFixed(2)}`,
    );

  const modes: Mode[] = ["base", "twig", "ttp-only", "ssd-only", "fastv", "random"];
  const rows: { mode: Mode; ttft: number; tps: number; acc: number }[] = [];
  for (const mode of modes) {
    const ttft: number[] = [];
    const tps: number[] = [];
    let drafted = 0;
    let accepted = 0;
    for (let r = 0; r < args.reps; r++) {
      let first: number | undefined;
      const t0 = performance.now();
      const res = await decoder.generate({
        inputIds,
        pixelValues: pixels,
        mode,
        maxTokens: args.tokens,
        sampling: { temperature: 0, topP: 1 },
        onTokens: () => {
          first ??= performance.now() - t0;
          return true;
        },
      });
      ttft.push(first ?? 0);
      tps.push(res.outputIds.length / ((res.prefillMs + res.decodeMs) / 1000));
      drafted += res.steps.reduce((a, s) => a + s.drafted.length, 0);
      accepted += res.steps.reduce((a, s) => a + s.accepted, 0);
    }
    rows.push({ mode, ttft: median(ttft), tps: median(tps), acc: drafted ? accepted / drafted : Number.NaN });
  }
  const base = rows[0].tps;
  console.log("  mode       TTFT ms   tok/s   vs base   acceptance");
  for (const r of rows) {
    console.log(
      `  ${r.mode.padEnd(9)} ${r.ttft.toFixed(1).padStart(8)} ${r.tps.toFixed(1).padStart(7)} ${(r.tps / base).toFixed(2).padStart(8)}x   ${Number.isNaN(r.acc) ? "-" : `${(r.acc * 100).toFixed(1)}%`}`,
    );
  }
  await decoder.release();
  await runtime.release();
}
