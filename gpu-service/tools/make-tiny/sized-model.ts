/**
 * Benchmark-size checkpoints: a complete LLaVA directory (HF layout, with `twig/`) of any
 * shape, with random weights, written tensor by tensor so that an 828M-parameter model
 * (3.3 GB of fp32) never sits in memory whole.
 *
 * Every tensor is a `LazyTensor`: its `data` is made from a seed derived from the seed of
 * the model and the tensor's own name each time it is read, and dropped after it is written.
 * The twig is grown the paper's way without copying anything: its layers are base layers
 * K+1..K+T (same names, so same data), its norm and head the base model's.
 *
 * The LM head's row for EOS is zero, so its logit is exactly 0 while the largest of the
 * other random logits is positive but with a vanishing chance: greedy decoding on random
 * weights never stops early, and a benchmark times the number of tokens it asked for.
 *
 * @example
 * writeSizedModel("/tmp/m", { text: { hiddenSize: 2048, numLayers: 16, ... }, vision: {...}, twig: { k: 2, t: 3 } });
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../../src/engine/decoding/sampling.js";
import type {
  DecoderLayerWeights,
  LinearWeights,
  LlavaWeights,
  NormWeights,
  Tensor,
  TextConfig,
  TwigWeights,
  VisionConfig,
} from "../../src/engine/weights.js";
import { TINY_WORDS, wordTokenizer, writeLlavaCheckpoint, writeTwig } from "./tiny-model.js";

/** The demo model's vision tower and tokenizer sizes (models/demo/config.json): the defaults. */
export const DEMO_VISION: VisionConfig = {
  hiddenSize: 128,
  intermediateSize: 512,
  numLayers: 5,
  numHeads: 4,
  imageSize: 96,
  patchSize: 8,
  numChannels: 3,
  layerNormEps: 1e-5,
  hiddenAct: "quick_gelu",
};

/**
 * The decoder shape every benchmark and `make-tiny` use for a given width, LLaMA's proportions:
 * heads of 64 dimensions (no GQA unless `kvHeads` is given) and an FFN 11/4 as wide as the model
 * (LLaMA-7B: 4096 -> 11008; 2048 -> 5632).
 */
export function llamaShape(
  hidden: number,
  layers: number,
  o: { heads?: number; kvHeads?: number; intermediate?: number } = {},
): Pick<TextConfig, "hiddenSize" | "intermediateSize" | "numLayers" | "numHeads" | "numKvHeads"> {
  const heads = o.heads ?? Math.max(1, hidden / 64);
  return {
    hiddenSize: hidden,
    intermediateSize: o.intermediate ?? Math.round((hidden * 11) / 4),
    numLayers: layers,
    numHeads: heads,
    numKvHeads: o.kvHeads ?? heads,
  };
}

export interface SizedModelSpec {
  /** Decoder shape; vocabSize is the tokenizer's when `tokenizerDir` is used. */
  text: Omit<TextConfig, "vocabSize" | "bosTokenId" | "eosTokenId" | "padTokenId" | "rmsNormEps" | "ropeTheta"> & {
    vocabSize?: number;
  };
  vision?: Partial<VisionConfig>;
  twig: { k: number; t: number; finalWipeLayer?: number };
  seed?: number;
  /** A model directory whose tokenizer.json (and tokenizer_config.json) to copy, when `text.vocabSize` is unset. */
  tokenizerDir?: string;
}

/** A tensor whose data is made on each read from its own seed (uniform in offset ± scale). */
function lazyTensor(seed: number, shape: number[], scale: number, offset = 0, zeroRow?: number): Tensor {
  return {
    shape,
    get data(): Float32Array {
      const n = shape.reduce((a, b) => a * b, 1);
      const rng = new Rng(seed);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = offset + (rng.next() * 2 - 1) * scale;
      if (zeroRow !== undefined) out.fill(0, zeroRow * shape[1], (zeroRow + 1) * shape[1]);
      return out;
    },
  };
}

/** FNV-1a of the name, mixed with the model's seed: each tensor's own seed. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The tokenizer: the given directory's when the vocabulary is unset, else whole words padded to `vocab` entries. */
function tokenizerFor(spec: SizedModelSpec): {
  json: object;
  config?: object;
  vocabSize: number;
  imageTokenIndex: number;
} {
  const dir = spec.tokenizerDir;
  if (spec.text.vocabSize === undefined && dir && existsSync(join(dir, "tokenizer.json"))) {
    const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    const vocab = json.model?.vocab as Record<string, number>;
    const added = (json.added_tokens ?? []) as { id: number; content: string }[];
    const ids = [...Object.values(vocab), ...added.map((a) => a.id)];
    const image = added.find((a) => a.content === "<image>")?.id ?? vocab["<image>"];
    if (image === undefined) throw new Error(`${dir}/tokenizer.json has no <image> token`);
    const cfgPath = join(dir, "tokenizer_config.json");
    const config = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, "utf8")) : undefined;
    return { json, config, vocabSize: Math.max(...ids) + 1, imageTokenIndex: image };
  }
  const vocab = spec.text.vocabSize ?? TINY_WORDS.length + 5;
  const words = [...new Set(TINY_WORDS)];
  for (let i = 0; words.length + 5 < vocab; i++) words.push(`w${i}`);
  const tok = wordTokenizer(words);
  if (tok.vocabSize !== vocab)
    throw new RangeError(`a vocabulary of ${vocab} is too small (at least ${tok.vocabSize})`);
  return tok;
}

/** Lazy random weights of the given shape (nothing is generated until a tensor's data is read). */
export function sizedLlavaWeights(spec: SizedModelSpec, vocabSize: number, imageTokenIndex: number): LlavaWeights {
  const seed = spec.seed ?? 0;
  const tc: TextConfig = {
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    bosTokenId: 1,
    eosTokenId: 2,
    ...spec.text,
    vocabSize,
  };
  const vc: VisionConfig = { ...DEMO_VISION, ...spec.vision };
  const H = tc.hiddenSize;
  const hd = H / tc.numHeads;
  if (!Number.isInteger(hd) || tc.numHeads % tc.numKvHeads !== 0)
    throw new RangeError(`${tc.numHeads} heads, ${tc.numKvHeads} kv heads do not divide a width of ${H}`);
  const t = (name: string, shape: number[], scale: number, offset = 0, zeroRow?: number) =>
    lazyTensor(tensorSeed(seed, name), shape, scale, offset, zeroRow);
  const lin = (name: string, out: number, inp: number, scale = 1 / Math.sqrt(inp), bias = false): LinearWeights => ({
    weight: t(`${name}.weight`, [out, inp], scale),
    ...(bias ? { bias: t(`${name}.bias`, [out], 0.1) } : {}),
  });
  const norm = (name: string): NormWeights => ({ weight: t(name, [H], 0.2, 1) });
  const s = 1 / Math.sqrt(H);
  const layer = (i: number): DecoderLayerWeights => {
    const p = `layers.${i}.`;
    return {
      inputNorm: norm(`${p}input_layernorm`),
      q: lin(`${p}q`, tc.numHeads * hd, H, s * 2),
      k: lin(`${p}k`, tc.numKvHeads * hd, H, s * 2),
      v: lin(`${p}v`, tc.numKvHeads * hd, H, s),
      o: lin(`${p}o`, H, tc.numHeads * hd, s),
      postAttentionNorm: norm(`${p}post_attention_layernorm`),
      gate: lin(`${p}gate`, tc.intermediateSize, H, s),
      up: lin(`${p}up`, tc.intermediateSize, H, s),
      down: lin(`${p}down`, H, tc.intermediateSize),
    };
  };
  const w = vc.hiddenSize;
  const vln = (name: string) => ({ weight: t(`${name}.weight`, [w], 0.2, 1), bias: t(`${name}.bias`, [w], 0.1) });
  const patches = (vc.imageSize / vc.patchSize) ** 2;
  return {
    config: {
      text: tc,
      vision: vc,
      imageTokenIndex,
      visionFeatureLayer: -2,
      visionFeatureSelectStrategy: "default",
      projectorHiddenAct: "gelu",
      imageMean: [0.48145466, 0.4578275, 0.40821073],
      imageStd: [0.26862954, 0.26130258, 0.27577711],
    },
    vision: {
      patchEmbedding: t("vision.patch", [w, vc.numChannels, vc.patchSize, vc.patchSize], 0.2),
      classEmbedding: t("vision.class", [w], 0.5),
      positionEmbedding: t("vision.position", [patches + 1, w], 0.5),
      preLayerNorm: vln("vision.pre"),
      layers: Array.from({ length: vc.numLayers }, (_, i) => {
        const p = `vision.${i}.`;
        return {
          layerNorm1: vln(`${p}ln1`),
          q: lin(`${p}q`, w, w, undefined, true),
          k: lin(`${p}k`, w, w, undefined, true),
          v: lin(`${p}v`, w, w, undefined, true),
          out: lin(`${p}out`, w, w, undefined, true),
          layerNorm2: vln(`${p}ln2`),
          fc1: lin(`${p}fc1`, vc.intermediateSize, w, undefined, true),
          fc2: lin(`${p}fc2`, w, vc.intermediateSize, undefined, true),
        };
      }),
      postLayerNorm: vln("vision.post"),
    },
    projector: {
      linear1: lin("projector.1", H, w, undefined, true),
      linear2: lin("projector.2", H, H, undefined, true),
    },
    text: {
      embedTokens: t("embed_tokens", [vocabSize, H], 1),
      layers: Array.from({ length: tc.numLayers }, (_, i) => layer(i)),
      norm: norm("norm"),
      lmHead: t("lm_head", [vocabSize, H], s * 4, 0, tc.eosTokenId),
    },
  };
}

/** Writes the model directory (HF layout) and its twig; returns the weights (lazy) and the parameter count. */
export function writeSizedModel(dir: string, spec: SizedModelSpec): { weights: LlavaWeights; parameters: number } {
  const tok = tokenizerFor(spec);
  const weights = sizedLlavaWeights(spec, tok.vocabSize, tok.imageTokenIndex);
  const L = weights.config.text.numLayers;
  const { k, t } = spec.twig;
  const kf = spec.twig.finalWipeLayer ?? Math.floor((3 * L) / 4);
  if (!(k >= 1 && t >= 1 && k + t <= L && kf > k && kf <= L))
    throw new RangeError(`twig K=${k}, T=${t}, K_f=${kf} does not fit ${L} layers`);
  writeLlavaCheckpoint(dir, weights, "hf", tok.json, "config" in tok ? tok.config : undefined);
  const twig: TwigWeights = {
    k,
    t,
    finalWipeLayer: kf,
    layers: weights.text.layers.slice(k, k + t),
    norm: weights.text.norm,
    lmHead: weights.text.lmHead,
  };
  writeTwig(join(dir, "twig"), twig);
  return { weights, parameters: countParameters(weights) };
}

/** Parameters of the model (without the twig). */
export function countParameters(w: LlavaWeights): number {
  let n = 0;
  const visit = (x: unknown): void => {
    if (x && typeof x === "object") {
      if ("shape" in x && Array.isArray((x as Tensor).shape) && Object.hasOwn(x, "data"))
        n += (x as Tensor).shape.reduce((a, b) => a * b, 1);
      else for (const v of Object.values(x)) if (v && typeof v === "object" && v !== w.config) visit(v);
    }
  };
  visit({ vision: w.vision, projector: w.projector, text: w.text });
  return n;
}
