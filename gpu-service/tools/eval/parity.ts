/**
 * Parity between the two implementations of the demo model: the fixture is
 * written by PyTorch (training/parity.py) from an exported checkpoint; this
 * module recomputes every number with the TypeScript engine and reports the
 * differences: prompt token ids (tokenizer + chat template), the preprocessed
 * picture over every value (sharp against PIL, parity-pixels.ts), last-position
 * logits of the full path and of the twig's draft path, the greedy output, and
 * the visual tokens TTP and FastV keep at each budget under each scorer
 * (parity-selection.ts).
 *
 * The model's numbers are computed from PyTorch's own pixels (the fixture's), so
 * that each check has one cause: libvips' bicubic resize is not PIL's to the last
 * bit, and a fraction of an 8-bit step moves logits by about 1e-3 and can swap
 * the R-th kept token with the next. The engine's preprocessing is held to
 * PyTorch's by the pixel check alone.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadLlava, loadTwig } from "../../src/engine/checkpoint/llava-loader.js";
import { argmax } from "../../src/engine/decoding/sampling.js";
import type { ScoreSource } from "../../src/engine/decoding/ttp.js";
import { preprocessImage } from "../../src/engine/image.js";
import { LlavaRuntime, type RuntimeOptions } from "../../src/engine/runtime/llava-runtime.js";
import { TextCodec } from "../../src/engine/tokenizer.js";
import { TwigDecoder } from "../../src/engine/twig/twig-decoder.js";
import { fixturePixels, normalisePixels, type PixelDifference, pixelDifference } from "./parity-pixels.js";
import { compareKept, type KeptAgreement } from "./parity-selection.js";

/** PyTorch's scores of the visual tokens under one scorer, and the tokens kept at each of the fixture's budgets. */
export interface ParitySelection {
  scores: number[];
  kept: number[][];
}

/** The pruning methods the fixture covers: TTP (`ttp-only` mode) and FastV (`fastv`). */
export const SELECTION_MODES = { ttp: "ttp-only", fastv: "fastv" } as const;
export type SelectionMethod = keyof typeof SELECTION_MODES;

export interface ParityCase {
  /** Path under the data directory. */
  image: string;
  /** Width and height of the file, and its PIL mode (RGB, RGBA, L, P). */
  imageSize: [number, number];
  imageMode: string;
  question: string;
  inputIds: number[];
  /** uint8 [S, S, 3] RGB after the pad and the resize, base64. */
  pixels: string;
  /** Sum of the normalised pixel values. */
  pixelSum: number;
  logits: number[];
  twigLogits: number[];
  greedyIds: number[];
  greedyText: string;
  selection: Record<SelectionMethod, Record<ScoreSource, ParitySelection>>;
}

export interface ParityBudget {
  prunedFraction: number;
  /** R-bar. */
  retainBudget: number;
  /** Visual tokens kept in layers K+1..K_f. */
  r: number;
}

export interface ParityFixture {
  model: string;
  maxTokens: number;
  budgets: ParityBudget[];
  cases: ParityCase[];
}

/** The engine's kept visual tokens for one method, scorer and budget, against PyTorch's. */
export interface SelectionResult extends KeptAgreement {
  method: SelectionMethod;
  scoreSource: ScoreSource;
  prunedFraction: number;
  r: number;
  /** R by the engine's budget rule, and how many visual tokens it kept. */
  engineR: number;
  engineKept: number;
}

export interface ParityResult {
  image: string;
  question: string;
  inputIdsEqual: boolean;
  pixels: PixelDifference;
  /** |sum of the engine's normalised pixels - PyTorch's|. */
  pixelSumDiff: number;
  /** max |a - b| / max(1, max |b|) over the logit row. */
  logitsRelError: number;
  twigLogitsRelError: number;
  argmaxEqual: boolean;
  twigArgmaxEqual: boolean;
  greedyEqual: boolean;
  greedyIds: number[];
  expectedGreedyIds: number[];
  selections: SelectionResult[];
}

/** Reads a fixture written by training/parity.py (by default the model's own `parity.json`). */
export function readParityFixture(path: string): ParityFixture {
  return JSON.parse(readFileSync(path, "utf8")) as ParityFixture;
}

/** A fixture case's picture as PyTorch fed it to the model: normalised float32 [3, S, S]. */
export function fixtureInput(c: ParityCase, mean: readonly number[], std: readonly number[]): Float32Array {
  return normalisePixels(fixturePixels(c.pixels), mean, std);
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
  const runtime = await LlavaRuntime.create(weights, options);
  const decoder = await TwigDecoder.create(runtime, loadTwig(join(modelDir, "twig"), weights));
  const { lower, twig } = decoder.parts;
  const cfg = runtime.textConfig;
  const codec = TextCodec.load(modelDir);
  const { imageMean: mean, imageStd: std } = weights.config;
  const results: ParityResult[] = [];
  try {
    for (const c of fixture.cases) {
      const bytes = readFileSync(join(dataDir, c.image));
      const inputIds = codec.encode(codec.formatChat([{ role: "user", content: c.question }]));
      const enginePixels = await preprocessImage(bytes, { imageSize: weights.config.vision.imageSize, mean, std });
      let sum = 0;
      for (const v of enginePixels) sum += v;
      const expectedU8 = fixturePixels(c.pixels);
      const pixels = normalisePixels(expectedU8, mean, std);
      const prompt = runtime.embedPrompt(inputIds, await runtime.encodeImage(pixels));
      const full = await runtime.full.run(prompt.hidden, prompt.positions, runtime.full.newCaches());
      const logits = await runtime.lastLogits(full.hidden);
      const low = await lower.run(prompt.hidden, prompt.positions, lower.newCaches());
      const tw = await twig.run(low.hidden, prompt.positions, twig.newCaches());
      const twigLogits = await decoder.drafter.logits(tw.hidden);
      // greedy with KV caches, on the same runtime (the fixture's is without caches)
      const { outputIds: greedyIds } = await runtime.generateBase({
        inputIds,
        pixelValues: pixels,
        maxTokens: fixture.maxTokens,
        sampling: { temperature: 0, topP: 1 },
      });
      // the fixture keeps EOS in its greedy ids; the engine stops at EOS without emitting it
      const expected = c.greedyIds.filter((id) => id !== cfg.eosTokenId);
      const selections: SelectionResult[] = [];
      for (const method of Object.keys(SELECTION_MODES) as SelectionMethod[]) {
        for (const [scoreSource, want] of Object.entries(c.selection[method]) as [ScoreSource, ParitySelection][]) {
          for (const [b, budget] of fixture.budgets.entries()) {
            const run = await decoder.generate({
              inputIds,
              pixelValues: pixels,
              plan: decoder.plan({ mode: SELECTION_MODES[method], retainBudget: budget.retainBudget, scoreSource }),
              maxTokens: 1,
              sampling: { temperature: 0, topP: 1 },
            });
            selections.push({
              method,
              scoreSource,
              prunedFraction: budget.prunedFraction,
              r: budget.r,
              engineR: run.r,
              engineKept: run.keptVisualIndices.length,
              ...compareKept(run.keptVisualIndices, want.kept[b], want.scores),
            });
          }
        }
      }
      results.push({
        image: c.image,
        question: c.question,
        inputIdsEqual: inputIds.join() === c.inputIds.join(),
        pixels: pixelDifference(enginePixels, expectedU8, mean, std),
        pixelSumDiff: Math.abs(sum - c.pixelSum),
        logitsRelError: relError(logits, c.logits),
        twigLogitsRelError: relError(twigLogits, c.twigLogits),
        argmaxEqual: argmax(logits) === argmax(c.logits),
        twigArgmaxEqual: argmax(twigLogits) === argmax(c.twigLogits),
        greedyEqual: greedyIds.join() === expected.join(),
        greedyIds,
        expectedGreedyIds: expected,
        selections,
      });
    }
  } finally {
    await Promise.all([decoder.release(), runtime.release()]);
  }
  return results;
}
