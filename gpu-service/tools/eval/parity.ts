/**
 * Parity between the two implementations of the demo model: the fixture is
 * written by PyTorch (training/parity.py) from an exported checkpoint; this
 * module recomputes every number with the TypeScript engine and reports the
 * differences: prompt token ids (tokenizer + chat template), preprocessed pixels
 * (sharp against PIL), last-position logits of the full path and of the twig's
 * draft path, and the greedy output.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadLlava, loadTwig } from "../../src/engine/checkpoint/llava-loader.js";
import { argmax } from "../../src/engine/decoding/sampling.js";
import { preprocessImage } from "../../src/engine/image.js";
import { headGraph } from "../../src/engine/onnx/decoder.js";
import { DecoderSegment } from "../../src/engine/runtime/decoder-segment.js";
import { LlavaRuntime, type RuntimeOptions } from "../../src/engine/runtime/llava-runtime.js";
import { createSession, ort } from "../../src/engine/runtime/session.js";
import { TextCodec } from "../../src/engine/tokenizer.js";

export interface ParityCase {
  image: string;
  question: string;
  inputIds: number[];
  pixelSum: number;
  pixelFirst: number[];
  logits: number[];
  twigLogits: number[];
  greedyIds: number[];
  greedyText: string;
}

export interface ParityFixture {
  model: string;
  maxTokens: number;
  cases: ParityCase[];
}

export interface ParityResult {
  image: string;
  question: string;
  inputIdsEqual: boolean;
  pixelSumDiff: number;
  pixelFirstMaxDiff: number;
  /** max |a - b| / max(1, max |b|) over the logit row. */
  logitsRelError: number;
  twigLogitsRelError: number;
  argmaxEqual: boolean;
  twigArgmaxEqual: boolean;
  greedyEqual: boolean;
  greedyIds: number[];
  expectedGreedyIds: number[];
}

export function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 1;
  let err = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
  return err / scale;
}

export async function checkParity(
  modelDir: string,
  fixture: ParityFixture,
  dataDir: string,
  options: RuntimeOptions = {},
): Promise<ParityResult[]> {
  const weights = loadLlava(modelDir);
  const twig = loadTwig(join(modelDir, "twig"), weights);
  const runtime = await LlavaRuntime.create(weights, options);
  const cfg = runtime.textConfig;
  const [lower, twigHead] = await Promise.all([
    runtime.segment(0, twig.k),
    createSession(headGraph(cfg, twig.norm, twig.lmHead), runtime.options),
  ]);
  const twigLayers = await DecoderSegment.create(cfg, twig.layers, runtime.options);
  const codec = TextCodec.load(modelDir);
  const vision = weights.config.vision;
  const results: ParityResult[] = [];
  try {
    for (const c of fixture.cases) {
      const bytes = readFileSync(join(dataDir, c.image));
      const inputIds = codec.encode(codec.formatChat([{ role: "user", content: c.question }]));
      const pixels = await preprocessImage(bytes, {
        imageSize: vision.imageSize,
        mean: weights.config.imageMean,
        std: weights.config.imageStd,
      });
      let sum = 0;
      for (const v of pixels) sum += v;
      const prompt = runtime.embedPrompt(inputIds, await runtime.encodeImage(pixels));
      const full = await runtime.full.run(prompt.hidden, prompt.positions, runtime.full.newCaches());
      const logits = await runtime.lastLogits(full.hidden);
      const low = await lower.run(prompt.hidden, prompt.positions, lower.newCaches());
      const tw = await twigLayers.run(low.hidden, prompt.positions, twigLayers.newCaches());
      const H = cfg.hiddenSize;
      const last = tw.hidden.subarray(tw.hidden.length - H);
      const twigLogits = (await twigHead.run({ hidden: new ort.Tensor("float32", last, [1, 1, H]) })).logits
        .data as Float32Array;
      // greedy with KV caches, on the same runtime (the fixture's is without caches)
      const { outputIds: greedyIds } = await runtime.generateBase({
        inputIds,
        pixelValues: pixels,
        maxTokens: fixture.maxTokens,
        sampling: { temperature: 0, topP: 1 },
      });
      // the fixture keeps EOS in its greedy ids; the engine stops at EOS without emitting it
      const expected = c.greedyIds.filter((id) => id !== cfg.eosTokenId);
      results.push({
        image: c.image,
        question: c.question,
        inputIdsEqual: inputIds.join() === c.inputIds.join(),
        pixelSumDiff: Math.abs(sum - c.pixelSum),
        pixelFirstMaxDiff: relError(pixels.subarray(0, c.pixelFirst.length), c.pixelFirst),
        logitsRelError: relError(logits, c.logits),
        twigLogitsRelError: relError(twigLogits, c.twigLogits),
        argmaxEqual: argmax(logits) === argmax(c.logits),
        twigArgmaxEqual: argmax(twigLogits) === argmax(c.twigLogits),
        greedyEqual: greedyIds.join() === expected.join(),
        greedyIds,
        expectedGreedyIds: expected,
      });
    }
  } finally {
    await Promise.all([runtime.release(), lower.release?.(), twigLayers.release?.()]);
  }
  return results;
}
