/**
 * `npm run bench -- twig`: every mode on the same requests in one run, on a
 * random-weight model (hidden 512, 16 layers, K=2, T=3, K_f=12, 576 visual
 * tokens, R-bar 128 by default: "77.8% pruned"; 88.9% is out of reach at 16
 * layers, where layers 1..K alone average N*K/L = 72 visual tokens per layer):
 * time to first token, tokens per second and speed
 * relative to `base`; and the cost of a draft step and of verifying n drafts
 * as fractions of a full decoding step, which fix the speedup that a given
 * acceptance rate can buy. Random weights accept almost no drafts, so the mode
 * table shows SSD's overhead here, not its gain.
 */
import { Rng } from "../../src/engine/decoding/sampling.js";
import type { LayerKv } from "../../src/engine/runtime/kv-cache.js";
import { LlavaRuntime } from "../../src/engine/runtime/llava-runtime.js";
import { MODES } from "../../src/engine/twig/modes.js";
import { TwigDecoder } from "../../src/engine/twig/twig-decoder.js";
import { growTwig } from "../make-tiny/grow-twig.js";
import { llamaShape } from "../make-tiny/sized-model.js";
import { randomLlavaWeights, randomTensor } from "../make-tiny/tiny-model.js";

const UNSPLIT = "base (1 segment)";
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Median times (ms), after an unpruned prefill of the prompt, of: a full step (one token
 * through every layer and the head), a draft step (one token through lower, twig, twig
 * head) and verification of n drafts (n+1 tokens through the layers above K and the head).
 */
async function stepCosts(d: TwigDecoder, inputIds: number[], pixels: Float32Array, reps: number) {
  const rt = d.runtime;
  const p = d.parts;
  const prompt = rt.embedPrompt(inputIds, await rt.encodeImage(pixels));
  const S = prompt.positions.length;
  const caches = d.newCaches();
  const low = await p.lower.run(prompt.hidden, prompt.positions, caches.lower);
  await p.twig.run(low.hidden, prompt.positions, caches.twig);
  const m = await p.mid.run(low.hidden, prompt.positions, caches.mid);
  if (p.top) await p.top.run(m.hidden, prompt.positions, caches.top);
  const all: LayerKv[] = Object.values(caches).flat();
  const time = async (f: () => Promise<unknown>) => {
    const xs: number[] = [];
    for (let r = 0; r <= reps; r++) {
      const t0 = performance.now();
      await f();
      xs.push(performance.now() - t0);
      for (const c of all) c.truncate(S);
    }
    return median(xs.slice(1));
  };
  const tokens = (n: number) => rt.embed(Array.from({ length: n }, (_, i) => 10 + i));
  const positions = (n: number) => Array.from({ length: n }, (_, i) => S + i);
  const upper = async (h: Float32Array, n: number) => {
    const mm = await p.mid.run(h, positions(n), caches.mid);
    return rt.logits(p.top ? (await p.top.run(mm.hidden, positions(n), caches.top)).hidden : mm.hidden);
  };
  const costs: [string, number][] = [];
  costs.push([
    "full step (1 token)",
    await time(async () => upper((await p.lower.run(tokens(1), positions(1), caches.lower)).hidden, 1)),
  ]);
  costs.push([
    "draft step (lower+twig+head)",
    await time(async () => {
      const h = (await p.lower.run(tokens(1), positions(1), caches.lower)).hidden;
      return d.drafter.logits((await p.twig.run(h, positions(1), caches.twig)).hidden);
    }),
  ]);
  for (const n of [1, 3, 5]) {
    const h = new Float32Array((n + 1) * rt.textConfig.hiddenSize).fill(0.1);
    costs.push([`verify ${n} drafts (${n + 1} rows above K)`, await time(() => upper(h, n + 1))]);
  }
  return costs;
}

export async function benchTwig(args: {
  hidden: number;
  layers: number;
  grid: number;
  /** R-bar; default 2N/9 (77.8% pruned) where the shape allows it. */
  retain?: number;
  threads: number;
  tokens: number;
  reps: number;
}): Promise<void> {
  const weights = randomLlavaWeights(
    1,
    {
      ...llamaShape(args.hidden, args.layers),
      maxPositionEmbeddings: args.grid * args.grid + 256,
      vocabSize: 2000,
    },
    { imageSize: args.grid * 4, patchSize: 4 },
  );
  weights.config.imageTokenIndex = 1999;
  const kf = Math.floor((3 * args.layers) / 4);
  const runtime = await LlavaRuntime.create(weights, { threads: args.threads });
  const decoder = await TwigDecoder.create(runtime, growTwig(weights, 2, 3, kf));
  const S = weights.config.vision.imageSize;
  const pixels = randomTensor(new Rng(3), [1, 3, S, S], 1).data;
  const inputIds = [1, ...Array.from({ length: 30 }, (_, i) => 10 + i), 1999, 50, 51, 52, 53];
  const N = runtime.numVisualTokens;
  // 2N/9 ("77.8% pruned"), or the model's default budget where that is out of this shape's reach
  const retainBudget = args.retain ?? Math.max(Math.round((2 * N) / 9), decoder.defaultRetainBudget);
  console.log(
    `bench twig: hidden ${args.hidden}, ${args.layers} layers, K=2, T=3, K_f=${kf}, N=${N} visual tokens, ` +
      `R-bar ${retainBudget} (${((1 - retainBudget / N) * 100).toFixed(1)}% pruned), ${args.tokens} new tokens, ` +
      `${args.threads} threads, median of ${args.reps}, random weights`,
  );

  console.log("\n  piece                               ms   / full step");
  const costs = await stepCosts(decoder, inputIds, pixels, args.reps * 3);
  const full = costs[0][1];
  for (const [name, ms] of costs)
    console.log(`  ${name.padEnd(32)} ${ms.toFixed(2).padStart(6)}   ${(ms / full).toFixed(2)}`);
  // what these costs buy: with each draft accepted independently with probability a, a round of
  // n drafts yields (1 - a^(n+1)) / (1 - a) tokens for n draft steps and one verification
  // (Leviathan et al.); a = 0.574 is the paper's measured acceptance
  const draft = costs[1][1] / full;
  const line = [0.3, 0.574, 0.8].map((a) => {
    const gains = [1, 3, 5].map((n, i) => {
      const tokens = (1 - a ** (n + 1)) / (1 - a);
      return `n=${n} ${(tokens / (n * draft + costs[2 + i][1] / full)).toFixed(2)}x`;
    });
    return `  acceptance ${a}: ${gains.join(", ")}`;
  });
  console.log("\n  decoding speed vs full steps that these costs imply (no pruning):");
  for (const l of line) console.log(l);

  // the modes take turns, repetition by repetition, so that a burst of load on the machine hits all alike;
  // "base (1 segment)" is the unsplit model (all layers one graph, no attention output): the cost of the split
  const runs = new Map<string, { ttft: number[]; tps: number[]; drafted: number; accepted: number; steps: number }>(
    [...MODES, UNSPLIT].map((m) => [m, { ttft: [], tps: [], drafted: 0, accepted: 0, steps: 0 }]),
  );
  let kept = "";
  for (let r = 0; r < args.reps; r++) {
    const row = runs.get(UNSPLIT);
    let first: number | undefined;
    const t0 = performance.now();
    const res = await runtime.generateBase({
      inputIds,
      pixelValues: pixels,
      maxTokens: args.tokens,
      sampling: { temperature: 0, topP: 1 },
      onToken: () => {
        first ??= performance.now() - t0;
        return true;
      },
    });
    row?.ttft.push(first ?? Number.NaN);
    row?.tps.push(res.outputIds.length / ((res.prefillMs + res.decodeMs) / 1000));
    for (const mode of MODES) {
      const row = runs.get(mode);
      if (!row) continue;
      let first: number | undefined;
      const t0 = performance.now();
      const res = await decoder.generate({
        inputIds,
        pixelValues: pixels,
        plan: decoder.plan({ mode, retainBudget }),
        maxTokens: args.tokens,
        sampling: { temperature: 0, topP: 1 },
        onTokens: () => {
          first ??= performance.now() - t0;
          return true;
        },
      });
      row.ttft.push(first ?? Number.NaN);
      row.tps.push(res.outputIds.length / ((res.prefillMs + res.decodeMs) / 1000));
      row.drafted += res.steps.reduce((a, s) => a + s.drafted.length, 0);
      row.accepted += res.steps.reduce((a, s) => a + s.accepted, 0);
      row.steps += res.steps.length;
      if (mode === "twig") kept = `${res.r} of ${N}`;
    }
  }
  const base = median(runs.get("base")?.tps ?? [1]);
  console.log(`\n  (pruning modes keep R = ${kept} visual tokens in layers 3..${kf}, none after)`);
  console.log("  mode               TTFT ms    tok/s   vs base   acceptance   accepted/verification");
  for (const [mode, r] of runs) {
    const tps = median(r.tps);
    const acc = r.drafted ? `${((r.accepted / r.drafted) * 100).toFixed(1)}%` : "-";
    const len = r.steps ? (r.accepted / r.steps).toFixed(2) : "-";
    console.log(
      `  ${mode.padEnd(17)} ${median(r.ttft).toFixed(1).padStart(8)} ${tps.toFixed(1).padStart(8)} ${(tps / base).toFixed(2).padStart(8)}x   ${acc.padStart(10)}   ${len.padStart(6)}`,
    );
  }
  await decoder.release();
  await runtime.release();
}
