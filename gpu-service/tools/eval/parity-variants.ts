/**
 * Parity of the LLaVA-NeXT and LLaVA-NeXT-Video variants with PyTorch: the fixture is written by
 * training/parity_variants.py (format in training/VARIANTS.md) beside an exported variant, with a
 * safetensors file per scene holding PyTorch's `pixel_values` (every AnyRes view, or every frame) and
 * `visual_features` (what replaces the placeholder). For each case this module recomputes, with the
 * TypeScript engine: the prompt's token ids, the views' pixels, the layout (best resolution, patch grid and
 * unpadded grid, or frames and tokens per frame, and N), the visual tokens, the last prompt position's logits
 * of the full path and of the draft path, the greedy output, the visual tokens every pruning mode keeps at
 * the three budgets (TTP and FastV by both scorers, VisionZip), and TTP's pruned greedy answers.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { anyresLayout, anyresSpecOf } from "../../src/engine/anyres/layout.js";
import { loadLlava, loadTwig } from "../../src/engine/checkpoint/llava-loader.js";
import { SafetensorsFile } from "../../src/engine/checkpoint/safetensors.js";
import { budgetForPrunedFraction } from "../../src/engine/decoding/budget.js";
import { isScoreSource, type ScoreSource } from "../../src/engine/decoding/ttp.js";
import { InvalidRequestError } from "../../src/engine/errors.js";
import { LocalEngine } from "../../src/engine/local-engine.js";
import { headGraph } from "../../src/engine/onnx/decoder.js";
import type { ExecutionProvider } from "../../src/engine/options.js";
import type { GenerateParams, Mode } from "../../src/engine/plan.js";
import { DecoderSegment } from "../../src/engine/runtime/decoder-segment.js";
import { LlavaRuntime } from "../../src/engine/runtime/llava-runtime.js";
import { createSession, ort } from "../../src/engine/runtime/session.js";
import { TextCodec } from "../../src/engine/tokenizer.js";
import { prepareVisual } from "../../src/engine/visual-input.js";
import { relError, SELECTION_MODES } from "./parity.js";
import { PRUNED_FRACTIONS } from "./run.js";

export interface VariantParityCase {
  id: string;
  /** PNG paths under the data directory: a picture, or a clip's frames in order. */
  images: string[];
  question: string;
  inputIds: number[];
  placeholderIndex: number;
  /** NeXT: the picture's [height, width], the best resolution, the patch grid [rows, cols] and the unpadded grid. */
  imageSize?: [number, number];
  bestResolution?: [number, number];
  grid?: [number, number];
  unpaddedGrid?: [number, number];
  /** Video: frames and visual tokens per frame. */
  frames?: number;
  tokensPerFrame?: number;
  numVisualTokens: number;
  /** The case's safetensors file, relative to the fixture: pixel_values and visual_features. */
  tensors: string;
  pixelSum: number;
  featureSum: number;
  logits: number[];
  twigLogits: number[];
  greedyIds: number[];
  /** "ttp/last-token" (...) -> "0.667" -> R and the kept indices. */
  kept: Record<string, Record<string, { R: number; indices: number[] }>>;
  /** "ttp/all-text/0.667" -> the pruned greedy answer (short questions). */
  prunedGreedyIds?: Record<string, number[]>;
}

export interface VariantParityFixture {
  model: string;
  variant: "next" | "video";
  maxTokens: number;
  cases: VariantParityCase[];
}

export interface VariantParityResult {
  id: string;
  /** What differs, one line each (empty: the case agrees). */
  failures: string[];
  pixelMaxDiff: number;
  featuresRelError: number;
  logitsRelError: number;
  twigLogitsRelError: number;
  greedyTokens: number;
  /** Kept sets compared (mode x scorer x budget) and pruned answers compared. */
  keptChecked: number;
  prunedChecked: number;
  /** Budgets below the model's smallest R-bar (N*K/L; a shallow smoke model's), which the engine refuses: not compared. */
  budgetsSkipped: number;
}

/** float32 on both sides through 32 layers, different operation order (as parity.ts's). */
export const VARIANT_TOLERANCE = { pixels: 1e-4, features: 1e-3, logits: 1e-3 };

/** The modes of the fixture's selection methods (parity.ts's, and VisionZip's). */
const MODE_OF: Record<string, Mode> = { ...SELECTION_MODES, visionzip: "visionzip" };

/** The pruned share a fixture names to three decimals ("0.667"): exactly 2/3, 7/9 or 8/9, as PyTorch used it. */
const fractionOf = (key: string) => PRUNED_FRACTIONS.find((p) => p.toFixed(3) === key) ?? Number(key);

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = a.length === b.length ? 0 : Number.POSITIVE_INFINITY;
  for (let i = 0; i < Math.min(a.length, b.length); i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const sum = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s;
};

/** Checks every case of a variant fixture (its tensors beside it) against the engine on `modelDir`. */
export async function checkVariantParity(
  modelDir: string,
  fixture: VariantParityFixture,
  fixturePath: string,
  dataDir: string,
  options: { provider?: ExecutionProvider } = {},
): Promise<VariantParityResult[]> {
  const weights = loadLlava(modelDir);
  const twig = loadTwig(join(modelDir, "twig"), weights);
  const runtime = await LlavaRuntime.create(weights, options);
  const engine = await LocalEngine.load(modelDir, options);
  const cfg = runtime.textConfig;
  const [lower, twigHead, twigLayers] = await Promise.all([
    runtime.segment(0, twig.k),
    createSession(headGraph(cfg, twig.norm, twig.lmHead), runtime.options),
    DecoderSegment.create(cfg, twig.layers, runtime.options),
  ]);
  const codec = TextCodec.load(modelDir);
  const config = weights.config;
  const results: VariantParityResult[] = [];
  try {
    for (const c of fixture.cases) {
      const f: string[] = [];
      const media: Pick<GenerateParams, "image" | "video"> =
        fixture.variant === "video"
          ? { video: { frames: c.images.map((p) => readFileSync(join(dataDir, p))) } }
          : { image: readFileSync(join(dataDir, c.images[0])) };
      const visual = await prepareVisual(media, config);
      const inputIds = codec.encode(codec.formatChat([{ role: "user", content: c.question }], visual.placeholder));
      if (inputIds.join() !== c.inputIds.join()) f.push("prompt token ids differ");
      if (inputIds.indexOf(runtime.placeholderOf(visual.input)) !== c.placeholderIndex)
        f.push("placeholder index differs");
      if (visual.numVisual !== c.numVisualTokens) f.push(`N ${visual.numVisual} != ${c.numVisualTokens}`);
      // the layout
      if (c.imageSize && config.anyres) {
        const layout = anyresLayout(c.imageSize, anyresSpecOf(config.anyres.gridPinpoints, config.vision));
        const side = layout.side;
        const got = {
          imageSize: [...visual.size],
          bestResolution: [...layout.canvas],
          grid: [layout.tileRows * side, layout.tileCols * side],
          unpaddedGrid: [layout.keep.bottom - layout.keep.top, layout.keep.right - layout.keep.left],
        };
        for (const [k, v] of Object.entries(got))
          if (v.join() !== (c[k as keyof typeof got] ?? []).join())
            f.push(`${k} [${v}] != [${c[k as keyof typeof got]}]`);
      }
      if (c.frames !== undefined && visual.frameIndices?.length !== c.frames)
        f.push(`frames ${visual.frameIndices?.length} != ${c.frames}`);
      // pixels and visual tokens against PyTorch's tensors
      const tensors = SafetensorsFile.open(join(dirname(fixturePath), c.tensors));
      let pixelMaxDiff: number;
      let featuresRelError: number;
      try {
        pixelMaxDiff = maxAbsDiff(visual.pixelValues, tensors.read("pixel_values").data);
        const encoded = await runtime.encodeVisual(visual.input);
        featuresRelError = relError(encoded.features, tensors.read("visual_features").data);
        if (Math.abs(sum(encoded.features) - c.featureSum) > 1e-3 * Math.max(1, Math.abs(c.featureSum)))
          f.push(`feature sum ${sum(encoded.features)} != ${c.featureSum}`);
      } finally {
        tensors.close();
      }
      // float32 on both sides: the sums may differ by rounding, at most a millionth per value
      if (Math.abs(sum(visual.pixelValues) - c.pixelSum) > 1e-6 * visual.pixelValues.length)
        f.push(`pixel sum ${sum(visual.pixelValues)} != ${c.pixelSum}`);
      if (pixelMaxDiff > VARIANT_TOLERANCE.pixels) f.push(`pixels differ by ${pixelMaxDiff}`);
      if (featuresRelError > VARIANT_TOLERANCE.features)
        f.push(`visual features differ by ${featuresRelError.toExponential(2)}`);
      // the prompt's last logits, full path and draft path
      const features = (await runtime.encodeVisual(visual.input)).features;
      const prompt = runtime.embedPrompt(inputIds, features, runtime.placeholderOf(visual.input));
      const full = await runtime.full.run(prompt.hidden, prompt.positions, runtime.full.newCaches());
      const logits = await runtime.lastLogits(full.hidden);
      const low = await lower.run(prompt.hidden, prompt.positions, lower.newCaches());
      const tw = await twigLayers.run(low.hidden, prompt.positions, twigLayers.newCaches());
      const H = cfg.hiddenSize;
      const last = tw.hidden.subarray(tw.hidden.length - H);
      const twigLogits = (await twigHead.run({ hidden: new ort.Tensor("float32", last, [1, 1, H]) })).logits
        .data as Float32Array;
      const logitsRelError = relError(logits, c.logits);
      const twigLogitsRelError = relError(twigLogits, c.twigLogits);
      if (logitsRelError > VARIANT_TOLERANCE.logits) f.push(`logits differ by ${logitsRelError.toExponential(2)}`);
      if (twigLogitsRelError > VARIANT_TOLERANCE.logits)
        f.push(`twig logits differ by ${twigLogitsRelError.toExponential(2)}`);
      // greedy (the fixture keeps EOS; the engine stops before it)
      const noEos = (ids: number[]) => ids.filter((id) => id !== cfg.eosTokenId);
      const { outputIds } = await runtime.generateBase({
        inputIds,
        visual: visual.input,
        maxTokens: fixture.maxTokens,
        sampling: { temperature: 0, topP: 1 },
      });
      if (outputIds.join() !== noEos(c.greedyIds).join()) f.push(`greedy ${outputIds} != ${noEos(c.greedyIds)}`);
      // what every pruning mode keeps, and TTP's pruned answers, through the engine as the service runs it
      // (undefined where planning refuses the budget: PyTorch keeps at least one token where the budget is
      // below the smallest R-bar, the engine refuses it)
      const ask = async (mode: Mode, scoreSource: ScoreSource | undefined, pruned: number, maxTokens: number) => {
        let kept: number[] = [];
        let params: GenerateParams;
        try {
          params = await engine.plan({
            ...media,
            messages: [{ role: "user", content: c.question }],
            maxTokens,
            temperature: 0,
            topP: 1,
            stop: [],
            mode,
            scoreSource,
            retainBudget: budgetForPrunedFraction(pruned, c.numVisualTokens),
          });
        } catch (err) {
          if (err instanceof InvalidRequestError && /retain[ _]budget \d+ is outside/.test(err.message))
            return undefined;
          throw err;
        }
        await engine.generate(params, (e) => {
          if (e.type === "started") kept = e.keptVisualIndices;
        });
        return { kept, ids: engine.lastTrace?.result.outputIds ?? [] };
      };
      let budgetsSkipped = 0;
      let keptChecked = 0;
      for (const [key, budgets] of Object.entries(c.kept)) {
        const [name, source] = key.split("/");
        const mode = MODE_OF[name];
        if (!mode || (source !== undefined && !isScoreSource(source))) continue;
        for (const [budget, want] of Object.entries(budgets)) {
          const got = await ask(mode, source as ScoreSource | undefined, fractionOf(budget), 1);
          if (!got) {
            budgetsSkipped++;
            continue;
          }
          if (got.kept.length !== want.R) f.push(`${key} @ ${budget}: R ${got.kept.length} != ${want.R}`);
          else if (got.kept.join() !== want.indices.join()) f.push(`${key} @ ${budget}: kept indices differ`);
          keptChecked++;
        }
      }
      let prunedChecked = 0;
      for (const [key, want] of Object.entries(c.prunedGreedyIds ?? {})) {
        const [name, source, budget] = key.split("/");
        if (MODE_OF[name] !== "ttp-only" || !isScoreSource(source)) continue;
        const got = await ask("ttp-only", source, fractionOf(budget), 8);
        if (!got) {
          budgetsSkipped++;
          continue;
        }
        if (got.ids.join() !== noEos(want).join()) f.push(`${key}: pruned greedy ${got.ids} != ${noEos(want)}`);
        prunedChecked++;
      }
      results.push({
        id: c.id,
        failures: f,
        pixelMaxDiff,
        featuresRelError,
        logitsRelError,
        twigLogitsRelError,
        greedyTokens: outputIds.length,
        keptChecked,
        prunedChecked,
        budgetsSkipped,
      });
    }
  } finally {
    await Promise.all([runtime.release(), engine.close(), lower.release(), twigLayers.release(), twigHead.release()]);
  }
  return results;
}
