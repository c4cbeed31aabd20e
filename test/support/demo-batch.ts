/**
 * The demo model's twig decoder loaded in the test's own thread, and requests for it as the batch
 * loop takes them (engine/batch/batch-loop.ts), so that a test controls the order in which they
 * reach the loop; and the comparison of batched outputs with lone ones that allows a near-tie.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { BatchResult } from "../../gpu-service/src/engine/batch/batch-loop.js";
import { loadLlava, loadTwig } from "../../gpu-service/src/engine/checkpoint/llava-loader.js";
import type { EngineInfo } from "../../gpu-service/src/engine/engine.js";
import type { Mode } from "../../gpu-service/src/engine/plan.js";
import { planAcceleration } from "../../gpu-service/src/engine/plan-request.js";
import { LlavaRuntime } from "../../gpu-service/src/engine/runtime/llava-runtime.js";
import { TextCodec } from "../../gpu-service/src/engine/tokenizer.js";
import { TwigDecoder, type TwigGenerateOptions } from "../../gpu-service/src/engine/twig/twig-decoder.js";
import { prepareVisual } from "../../gpu-service/src/engine/visual-input.js";
import { repoRoot } from "./gpu-service.js";

export const DEMO_MODEL_DIR = join(repoRoot, "models", "demo");

/** A held-out picture of the demo model's test set. */
export const demoPicture = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "test", `${String(i).padStart(4, "0")}.png`));

export interface DemoDecoder {
  runtime: LlavaRuntime;
  decoder: TwigDecoder;
  codec: TextCodec;
  release(): Promise<void>;
}

/** The demo model's runtime and twig decoder, one ONNX Runtime thread. */
export async function loadDemoDecoder(): Promise<DemoDecoder> {
  const weights = loadLlava(DEMO_MODEL_DIR);
  const runtime = await LlavaRuntime.create(weights, { threads: 1 }, { fullSegment: false });
  const decoder = await TwigDecoder.create(runtime, loadTwig(join(DEMO_MODEL_DIR, "twig"), weights));
  return {
    runtime,
    decoder,
    codec: TextCodec.load(DEMO_MODEL_DIR),
    release: async () => {
      await decoder.release();
      await runtime.release();
    },
  };
}

export interface DemoAsk {
  picture: number;
  question: string;
  mode: Mode;
  retainBudget?: number;
  maxTokens: number;
  sampling?: { temperature: number; topP: number };
  seed?: number;
}

/** A request planned as the engine plans it (plan-request.ts), ready for `decoder.generate` or a batch loop. */
export async function demoRequest(d: DemoDecoder, ask: DemoAsk): Promise<TwigGenerateOptions> {
  const { runtime, decoder, codec } = d;
  const visual = await prepareVisual({ image: demoPicture(ask.picture) }, runtime.weights.config);
  const cfg = runtime.textConfig;
  const info: EngineInfo = {
    name: "demo",
    visualTokens: runtime.numVisualTokens,
    numLayers: cfg.numLayers,
    contextLength: cfg.maxPositionEmbeddings,
    twig: decoder.info,
  };
  return {
    inputIds: codec.encode(codec.formatChat([{ role: "user", content: ask.question }], visual.placeholder)),
    visual: visual.input,
    plan: planAcceleration({ mode: ask.mode, retainBudget: ask.retainBudget }, info, visual.numVisual),
    maxTokens: ask.maxTokens,
    sampling: ask.sampling ?? { temperature: 0, topP: 1 },
    seed: ask.seed,
  };
}

/**
 * Batched greedy outputs against lone ones: equal token for token, or differing first where the
 * batched full-model row that chose the token had its top two logits within `nearTie` (relative
 * gap, from BatchOptions.recordMargins), or a mismatch; one line per difference.
 */
export function compareWithAlone(
  batched: readonly BatchResult[],
  alone: readonly number[][],
  label: (i: number) => string,
  nearTie = 1e-4,
): { equal: number; nearTies: string[]; mismatches: string[] } {
  let equal = 0;
  const nearTies: string[] = [];
  const mismatches: string[] = [];
  batched.forEach((b, i) => {
    const a = alone[i];
    if (b.outputIds.length === a.length && b.outputIds.every((t, j) => t === a[j])) {
      equal++;
      return;
    }
    let j = 0;
    while (j < a.length && b.outputIds[j] === a[j]) j++;
    const gap = b.margins?.[j] ?? Number.POSITIVE_INFINITY;
    const line = `request ${i} (${label(i)}): token ${j} ${a[j]} alone vs ${b.outputIds[j]} batched, top-2 gap ${gap.toExponential(2)}`;
    (gap < nearTie ? nearTies : mismatches).push(line);
  });
  return { equal, nearTies, mismatches };
}
