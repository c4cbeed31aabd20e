/**
 * The tiny-model generator: a complete LLaVA checkpoint directory (config,
 * safetensors in the HF or the original layout, tokenizer.json with a small
 * word-level vocabulary, preprocessor_config.json, and a twig grown the paper's
 * way), with random weights, deterministic from a seed. Tests and the CLI's
 * `make-tiny` use it; it is also where random weights for engine tests come from.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors } from "../../src/engine/checkpoint/safetensors.js";
import { Rng } from "../../src/engine/decoding/sampling.js";
import type {
  DecoderLayerWeights,
  LlavaWeights,
  Tensor,
  TextConfig,
  TwigWeights,
  VisionConfig,
} from "../../src/engine/weights.js";
import { growTwig } from "./grow-twig.js";

export function randomTensor(rng: Rng, shape: number[], scale: number, offset = 0): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = offset + (rng.next() * 2 - 1) * scale;
  return { shape, data };
}

export function tinyTextConfig(overrides: Partial<TextConfig> = {}): TextConfig {
  return {
    hiddenSize: 32,
    intermediateSize: 48,
    numLayers: 3,
    numHeads: 4,
    numKvHeads: 2,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    vocabSize: 40,
    maxPositionEmbeddings: 64,
    bosTokenId: 1,
    eosTokenId: 2,
    ...overrides,
  };
}

export function randomDecoderLayers(rng: Rng, c: TextConfig, count = c.numLayers): DecoderLayerWeights[] {
  const hd = c.hiddenSize / c.numHeads;
  const s = 1 / Math.sqrt(c.hiddenSize);
  return Array.from({ length: count }, () => ({
    inputNorm: { weight: randomTensor(rng, [c.hiddenSize], 0.2, 1) },
    q: { weight: randomTensor(rng, [c.hiddenSize, c.hiddenSize], s * 2) },
    k: { weight: randomTensor(rng, [c.numKvHeads * hd, c.hiddenSize], s * 2) },
    v: { weight: randomTensor(rng, [c.numKvHeads * hd, c.hiddenSize], s) },
    o: { weight: randomTensor(rng, [c.hiddenSize, c.hiddenSize], s) },
    postAttentionNorm: { weight: randomTensor(rng, [c.hiddenSize], 0.2, 1) },
    gate: { weight: randomTensor(rng, [c.intermediateSize, c.hiddenSize], s) },
    up: { weight: randomTensor(rng, [c.intermediateSize, c.hiddenSize], s) },
    down: { weight: randomTensor(rng, [c.hiddenSize, c.intermediateSize], 1 / Math.sqrt(c.intermediateSize)) },
  }));
}

/** A complete random LLaVA (tiny ViT + projector + decoder), for engine tests. */
export function randomLlavaWeights(
  seed: number,
  text: Partial<TextConfig> = {},
  vision: Partial<VisionConfig> = {},
): LlavaWeights {
  const rng = new Rng(seed);
  const tc = tinyTextConfig(text);
  const vc: VisionConfig = {
    hiddenSize: 24,
    intermediateSize: 40,
    numLayers: 3,
    numHeads: 3,
    imageSize: 16,
    patchSize: 4,
    numChannels: 3,
    layerNormEps: 1e-5,
    hiddenAct: "quick_gelu",
    ...vision,
  };
  const w = vc.hiddenSize;
  const lin = (out: number, inp: number) => ({
    weight: randomTensor(rng, [out, inp], 1 / Math.sqrt(inp)),
    bias: randomTensor(rng, [out], 0.1),
  });
  const ln = (n: number) => ({ weight: randomTensor(rng, [n], 0.2, 1), bias: randomTensor(rng, [n], 0.1) });
  const patches = (vc.imageSize / vc.patchSize) ** 2;
  return {
    config: {
      text: tc,
      vision: vc,
      imageTokenIndex: tc.vocabSize - 1,
      visionFeatureLayer: -2,
      visionFeatureSelectStrategy: "default",
      projectorHiddenAct: "gelu",
      imageMean: [0.48145466, 0.4578275, 0.40821073],
      imageStd: [0.26862954, 0.26130258, 0.27577711],
    },
    vision: {
      patchEmbedding: randomTensor(rng, [w, 3, vc.patchSize, vc.patchSize], 0.2),
      classEmbedding: randomTensor(rng, [w], 0.5),
      positionEmbedding: randomTensor(rng, [patches + 1, w], 0.5),
      preLayerNorm: ln(w),
      layers: Array.from({ length: vc.numLayers }, () => ({
        layerNorm1: ln(w),
        q: lin(w, w),
        k: lin(w, w),
        v: lin(w, w),
        out: lin(w, w),
        layerNorm2: ln(w),
        fc1: lin(vc.intermediateSize, w),
        fc2: lin(w, vc.intermediateSize),
      })),
      postLayerNorm: ln(w),
    },
    projector: { linear1: lin(tc.hiddenSize, w), linear2: lin(tc.hiddenSize, tc.hiddenSize) },
    text: {
      embedTokens: randomTensor(rng, [tc.vocabSize, tc.hiddenSize], 1),
      layers: randomDecoderLayers(rng, tc),
      norm: { weight: randomTensor(rng, [tc.hiddenSize], 0.2, 1) },
      lmHead: randomTensor(rng, [tc.vocabSize, tc.hiddenSize], (1 / Math.sqrt(tc.hiddenSize)) * 4),
    },
  };
}

export const TINY_WORDS = (
  "A chat between a curious human and an artificial intelligence assistant . The assistant gives helpful , detailed , and polite answers " +
  "to the human ' s questions USER : ASSISTANT what colour is the circle square triangle star red green blue yellow purple orange " +
  "how many shapes are there in image top bottom left right center one two three four yes no describe scene picture of with ?"
).split(" ");

/**
 * tokenizer.json: whole words as a WordPiece vocabulary, Whitespace pre-tokenizer, special tokens first,
 * then the words, `<image>` and any `placeholders` (such as `<video>`) last.
 */
export function wordTokenizer(
  words: readonly string[],
  placeholders: readonly string[] = [],
): { json: object; vocabSize: number; imageTokenIndex: number; ids: Record<string, number> } {
  const specials = ["<unk>", "<s>", "</s>", "<pad>"];
  const vocab: Record<string, number> = {};
  for (const w of [...specials, ...words]) if (!(w in vocab)) vocab[w] = Object.keys(vocab).length;
  const imageTokenIndex = Object.keys(vocab).length;
  for (const p of ["<image>", ...placeholders]) vocab[p] = Object.keys(vocab).length;
  const added = [...specials, "<image>", ...placeholders].map((content) => ({
    id: vocab[content],
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: { type: "Whitespace" },
      post_processor: null,
      decoder: { type: "WordPiece", prefix: "##", cleanup: true },
      model: {
        type: "WordPiece",
        unk_token: "<unk>",
        continuing_subword_prefix: "##",
        max_input_chars_per_word: 100,
        vocab,
      },
    },
    vocabSize: Object.keys(vocab).length,
    imageTokenIndex,
    ids: vocab,
  };
}

export type CheckpointLayout = "hf" | "original";

function linearTensors(out: Record<string, Tensor>, name: string, w: { weight: Tensor; bias?: Tensor }): void {
  out[`${name}.weight`] = w.weight;
  if (w.bias) out[`${name}.bias`] = w.bias;
}

function decoderTensors(out: Record<string, Tensor>, prefix: string, layers: DecoderLayerWeights[]): void {
  layers.forEach((l, i) => {
    const p = `${prefix}layers.${i}.`;
    out[`${p}input_layernorm.weight`] = l.inputNorm.weight;
    out[`${p}post_attention_layernorm.weight`] = l.postAttentionNorm.weight;
    for (const [n, w] of [
      ["q_proj", l.q],
      ["k_proj", l.k],
      ["v_proj", l.v],
      ["o_proj", l.o],
    ] as const)
      linearTensors(out, `${p}self_attn.${n}`, w);
    for (const [n, w] of [
      ["gate_proj", l.gate],
      ["up_proj", l.up],
      ["down_proj", l.down],
    ] as const)
      linearTensors(out, `${p}mlp.${n}`, w);
  });
}

function visionTensors(out: Record<string, Tensor>, p: string, v: LlavaWeights["vision"]): void {
  out[`${p}embeddings.patch_embedding.weight`] = v.patchEmbedding;
  out[`${p}embeddings.class_embedding`] = v.classEmbedding;
  out[`${p}embeddings.position_embedding.weight`] = v.positionEmbedding;
  linearTensors(out, `${p}pre_layrnorm`, v.preLayerNorm);
  linearTensors(out, `${p}post_layernorm`, v.postLayerNorm);
  v.layers.forEach((l, i) => {
    const q = `${p}encoder.layers.${i}.`;
    linearTensors(out, `${q}layer_norm1`, l.layerNorm1);
    linearTensors(out, `${q}layer_norm2`, l.layerNorm2);
    for (const [n, w] of [
      ["q_proj", l.q],
      ["k_proj", l.k],
      ["v_proj", l.v],
      ["out_proj", l.out],
    ] as const)
      linearTensors(out, `${q}self_attn.${n}`, w);
    linearTensors(out, `${q}mlp.fc1`, l.fc1);
    linearTensors(out, `${q}mlp.fc2`, l.fc2);
  });
}

function textConfigJson(c: TextConfig): Record<string, unknown> {
  return {
    model_type: "llama",
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxPositionEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
  };
}

function visionConfigJson(v: VisionConfig): Record<string, unknown> {
  return {
    model_type: "clip_vision_model",
    hidden_size: v.hiddenSize,
    intermediate_size: v.intermediateSize,
    num_hidden_layers: v.numLayers,
    num_attention_heads: v.numHeads,
    image_size: v.imageSize,
    patch_size: v.patchSize,
    num_channels: v.numChannels,
    hidden_act: v.hiddenAct,
    layer_norm_eps: v.layerNormEps,
  };
}

/** The HF config's architecture keys: LLaVA, LLaVA-NeXT (AnyRes pinpoints) or LLaVA-NeXT-Video (and its pooling). */
function architectureJson(c: LlavaWeights["config"]): Record<string, unknown> {
  if (c.video && c.anyres)
    return {
      architectures: ["LlavaNextVideoForConditionalGeneration"],
      model_type: "llava_next_video",
      image_grid_pinpoints: c.anyres.gridPinpoints,
      video_token_index: c.video.tokenIndex,
      spatial_pool_mode: c.video.poolMode,
      spatial_pool_stride: c.video.poolStride,
    };
  if (c.anyres)
    return {
      architectures: ["LlavaNextForConditionalGeneration"],
      model_type: "llava_next",
      image_grid_pinpoints: c.anyres.gridPinpoints,
    };
  return { architectures: ["LlavaForConditionalGeneration"], model_type: "llava" };
}

/** Writes weights as a checkpoint directory in the given layout (fp32); tensors are written one at a time. */
export function writeLlavaCheckpoint(
  dir: string,
  w: LlavaWeights,
  layout: CheckpointLayout,
  tokenizer: object,
  tokenizerConfig: object = { bos_token: "<s>", eos_token: "</s>", pad_token: "<pad>", unk_token: "<unk>" },
): void {
  const c = w.config;
  if (c.anyres && layout !== "hf") throw new RangeError("LLaVA-NeXT checkpoints are written in the HF layout only");
  mkdirSync(dir, { recursive: true });
  const t: Record<string, Tensor> = {};
  if (layout === "hf") {
    t["language_model.model.embed_tokens.weight"] = w.text.embedTokens;
    decoderTensors(t, "language_model.model.", w.text.layers);
    t["language_model.model.norm.weight"] = w.text.norm.weight;
    t["language_model.lm_head.weight"] = w.text.lmHead;
    linearTensors(t, "multi_modal_projector.linear_1", w.projector.linear1);
    linearTensors(t, "multi_modal_projector.linear_2", w.projector.linear2);
    visionTensors(t, "vision_tower.vision_model.", w.vision);
    if (w.imageNewline) t.image_newline = w.imageNewline;
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify(
        {
          ...architectureJson(c),
          image_token_index: c.imageTokenIndex,
          projector_hidden_act: "gelu",
          vision_feature_layer: c.visionFeatureLayer,
          vision_feature_select_strategy: c.visionFeatureSelectStrategy,
          text_config: textConfigJson(c.text),
          vision_config: visionConfigJson(c.vision),
        },
        null,
        2,
      ),
    );
  } else {
    t["model.embed_tokens.weight"] = w.text.embedTokens;
    decoderTensors(t, "model.", w.text.layers);
    t["model.norm.weight"] = w.text.norm.weight;
    t["lm_head.weight"] = w.text.lmHead;
    linearTensors(t, "model.mm_projector.0", w.projector.linear1);
    linearTensors(t, "model.mm_projector.2", w.projector.linear2);
    const tower: Record<string, Tensor> = {};
    visionTensors(tower, "vision_model.", w.vision);
    mkdirSync(join(dir, "vision_tower"), { recursive: true });
    writeSafetensors(join(dir, "vision_tower", "model.safetensors"), tower);
    writeFileSync(join(dir, "vision_tower", "config.json"), JSON.stringify(visionConfigJson(c.vision), null, 2));
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify(
        {
          architectures: ["LlavaLlamaForCausalLM"],
          model_type: "llava",
          ...textConfigJson(c.text),
          image_token_index: c.imageTokenIndex,
          mm_vision_tower: "vision_tower",
          mm_vision_select_layer: c.visionFeatureLayer,
          mm_vision_select_feature: c.visionFeatureSelectStrategy === "full" ? "cls_patch" : "patch",
          mm_projector_type: "mlp2x_gelu",
        },
        null,
        2,
      ),
    );
  }
  writeSafetensors(join(dir, "model.safetensors"), t);
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2));
  writeFileSync(
    join(dir, "preprocessor_config.json"),
    JSON.stringify(
      {
        image_mean: c.imageMean,
        image_std: c.imageStd,
        size: { shortest_edge: c.vision.imageSize },
        crop_size: c.anyres ? { height: c.vision.imageSize, width: c.vision.imageSize } : c.vision.imageSize,
        ...(c.anyres
          ? { image_processor_type: "LlavaNextImageProcessor", image_grid_pinpoints: c.anyres.gridPinpoints }
          : {}),
      },
      null,
      2,
    ),
  );
}

/** Writes a twig directory in the released twig layout. */
export function writeTwig(dir: string, twig: TwigWeights): void {
  mkdirSync(dir, { recursive: true });
  const t: Record<string, Tensor> = {};
  decoderTensors(t, "model.", twig.layers);
  t["model.norm.weight"] = twig.norm.weight;
  t["lm_head.weight"] = twig.lmHead;
  writeSafetensors(join(dir, "model.safetensors"), t);
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({ twig_K: twig.k, twig_T: twig.t, final_wipe_layer: twig.finalWipeLayer }, null, 2),
  );
}

/** A complete tiny model directory (with `twig/`): 8 decoder layers, 16 visual tokens, K=2, T=2, K_f=6. */
export function writeTinyModel(dir: string, seed = 0, layout: CheckpointLayout = "hf"): LlavaWeights {
  const tok = wordTokenizer(TINY_WORDS);
  const weights = randomLlavaWeights(seed, { numLayers: 8, vocabSize: tok.vocabSize, maxPositionEmbeddings: 256 });
  weights.config.imageTokenIndex = tok.imageTokenIndex;
  writeLlavaCheckpoint(dir, weights, layout, tok.json);
  writeTwig(join(dir, "twig"), growTwig(weights, 2, 2, 6));
  return weights;
}
