/**
 * Loads a LLaVA checkpoint directory into the engine's canonical `LlavaWeights`.
 * Three layouts are recognised by their tensor names:
 *  - HF transformers (legacy):  language_model.model.*, language_model.lm_head, vision_tower.vision_model.*, multi_modal_projector.linear_{1,2}
 *  - HF transformers (>=4.52):  model.language_model.*, lm_head, model.vision_tower.vision_model.*, model.multi_modal_projector.*
 *  - original LLaVA-1.5:        model.*, lm_head, model.mm_projector.{0,2}, with the CLIP tower in its own directory (vision_model.*)
 * Weights may be one file or shards listed in model.safetensors.index.json; fp32, fp16 or bf16.
 * The HF layouts also carry LLaVA-NeXT (`model_type` llava_next: AnyRes pinpoints and `image_newline`) and
 * LLaVA-NeXT-Video (llava_next_video: also the `<video>` token and the frames' spatial pooling).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isPrunedFraction } from "../decoding/budget.js";
import { isScoreSource, SCORE_SOURCES } from "../decoding/ttp.js";
import type {
  DecoderLayerWeights,
  LlavaConfig,
  LlavaWeights,
  Tensor,
  TextConfig,
  TwigWeights,
  VisionConfig,
} from "../weights.js";
import { CheckpointError, SafetensorsFile } from "./safetensors.js";

// biome-ignore lint/suspicious/noExplicitAny: parsed config files have any shape
type Json = Record<string, any>;

/** A set of safetensors files seen as one name → tensor map. */
export class TensorSource {
  private readonly files: SafetensorsFile[];
  constructor(readonly dir: string) {
    const index = join(dir, "model.safetensors.index.json");
    let names: string[];
    if (existsSync(index)) {
      const map = JSON.parse(readFileSync(index, "utf8")).weight_map as Record<string, string>;
      names = [...new Set(Object.values(map))];
    } else {
      names = readdirSync(dir)
        .filter((f) => f.endsWith(".safetensors"))
        .sort();
    }
    if (names.length === 0) throw new CheckpointError(`${dir}: no .safetensors files`);
    this.files = names.map((n) => SafetensorsFile.open(join(dir, n)));
  }

  has(name: string): boolean {
    return this.files.some((f) => f.has(name));
  }

  read(name: string, shape?: number[]): Tensor {
    const file = this.files.find((f) => f.has(name));
    if (!file) throw new CheckpointError(`${this.dir}: missing tensor "${name}"`);
    const t = file.read(name);
    if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))) {
      throw new CheckpointError(`${file.path}: tensor "${name}" has shape [${t.shape}], expected [${shape}]`);
    }
    return t;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

function readJson(path: string): Json {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new CheckpointError(`${path}: ${(err as Error).message}`);
  }
}

function textConfig(t: Json): TextConfig {
  const need = (k: string) => {
    if (typeof t[k] !== "number") throw new CheckpointError(`config: text config lacks "${k}"`);
    return t[k] as number;
  };
  return {
    hiddenSize: need("hidden_size"),
    intermediateSize: need("intermediate_size"),
    numLayers: need("num_hidden_layers"),
    numHeads: need("num_attention_heads"),
    numKvHeads: t.num_key_value_heads ?? t.num_attention_heads,
    rmsNormEps: t.rms_norm_eps ?? 1e-5,
    ropeTheta: t.rope_theta ?? 10000,
    vocabSize: need("vocab_size"),
    maxPositionEmbeddings: t.max_position_embeddings ?? 2048,
    bosTokenId: t.bos_token_id ?? 1,
    eosTokenId: t.eos_token_id ?? 2,
    padTokenId: t.pad_token_id,
  };
}

function visionConfig(v: Json): VisionConfig {
  return {
    hiddenSize: v.hidden_size ?? 1024,
    intermediateSize: v.intermediate_size ?? 4096,
    numLayers: v.num_hidden_layers ?? 24,
    numHeads: v.num_attention_heads ?? 16,
    imageSize: v.image_size ?? 336,
    patchSize: v.patch_size ?? 14,
    numChannels: v.num_channels ?? 3,
    layerNormEps: v.layer_norm_eps ?? 1e-5,
    hiddenAct: v.hidden_act === "gelu" ? "gelu" : "quick_gelu",
  };
}

export function loadDecoderLayer(src: TensorSource, prefix: string, c: TextConfig): DecoderLayerWeights {
  const hd = c.hiddenSize / c.numHeads;
  const H = c.hiddenSize;
  const lin = (name: string, shape: number[]) => ({ weight: src.read(`${prefix}${name}.weight`, shape) });
  return {
    inputNorm: { weight: src.read(`${prefix}input_layernorm.weight`, [H]) },
    q: lin("self_attn.q_proj", [c.numHeads * hd, H]),
    k: lin("self_attn.k_proj", [c.numKvHeads * hd, H]),
    v: lin("self_attn.v_proj", [c.numKvHeads * hd, H]),
    o: lin("self_attn.o_proj", [H, c.numHeads * hd]),
    postAttentionNorm: { weight: src.read(`${prefix}post_attention_layernorm.weight`, [H]) },
    gate: lin("mlp.gate_proj", [c.intermediateSize, H]),
    up: lin("mlp.up_proj", [c.intermediateSize, H]),
    down: lin("mlp.down_proj", [H, c.intermediateSize]),
  };
}

function loadVision(src: TensorSource, p: string, vc: VisionConfig): LlavaWeights["vision"] {
  const W = vc.hiddenSize;
  const patches = (vc.imageSize / vc.patchSize) ** 2;
  const ln = (name: string) => ({
    weight: src.read(`${p}${name}.weight`, [W]),
    bias: src.read(`${p}${name}.bias`, [W]),
  });
  const lin = (name: string, out: number, inp: number) => ({
    weight: src.read(`${p}${name}.weight`, [out, inp]),
    bias: src.read(`${p}${name}.bias`, [out]),
  });
  return {
    patchEmbedding: src.read(`${p}embeddings.patch_embedding.weight`, [W, vc.numChannels, vc.patchSize, vc.patchSize]),
    classEmbedding: src.read(`${p}embeddings.class_embedding`, [W]),
    positionEmbedding: src.read(`${p}embeddings.position_embedding.weight`, [patches + 1, W]),
    preLayerNorm: ln("pre_layrnorm"),
    layers: Array.from({ length: vc.numLayers }, (_, i) => {
      const l = `encoder.layers.${i}.`;
      return {
        layerNorm1: ln(`${l}layer_norm1`),
        q: lin(`${l}self_attn.q_proj`, W, W),
        k: lin(`${l}self_attn.k_proj`, W, W),
        v: lin(`${l}self_attn.v_proj`, W, W),
        out: lin(`${l}self_attn.out_proj`, W, W),
        layerNorm2: ln(`${l}layer_norm2`),
        fc1: lin(`${l}mlp.fc1`, vc.intermediateSize, W),
        fc2: lin(`${l}mlp.fc2`, W, vc.intermediateSize),
      };
    }),
    postLayerNorm: ln("post_layernorm"),
  };
}

/** The architectures whose configs carry LLaVA-NeXT's AnyRes (and, for the video model, its pooling). */
const NEXT_TYPES = ["llava_next", "llava_next_video"];

/**
 * LLaVA-NeXT's part of the config (`LlavaNextConfig`, `LlavaNextVideoConfig`): the grid pinpoints of AnyRes
 * and, for video, the `<video>` placeholder and the spatial pooling. Empty for LLaVA-1.5.
 */
function nextConfig(dir: string, cfg: Json, pre: Json, vision: VisionConfig): Pick<LlavaConfig, "anyres" | "video"> {
  const type = String(cfg.model_type ?? "llava");
  if (!NEXT_TYPES.includes(type)) return {};
  const pinpoints = cfg.image_grid_pinpoints ?? pre.image_grid_pinpoints;
  const tile = vision.imageSize;
  const valid =
    Array.isArray(pinpoints) &&
    pinpoints.length > 0 &&
    pinpoints.every(
      (p: unknown) =>
        Array.isArray(p) &&
        p.length === 2 &&
        p.every((x) => Number.isInteger(x) && x > 0 && x % tile === 0 && x <= 64 * tile),
    );
  if (!valid)
    throw new CheckpointError(
      `${dir}/config.json: ${type} needs image_grid_pinpoints, a list of [height, width] pairs that are multiples of the tower's ${tile} pixels`,
    );
  if (pre.image_grid_pinpoints && JSON.stringify(pre.image_grid_pinpoints) !== JSON.stringify(pinpoints))
    throw new CheckpointError(`${dir}: preprocessor_config.json's image_grid_pinpoints differ from config.json's`);
  const out: Pick<LlavaConfig, "anyres" | "video"> = { anyres: { gridPinpoints: pinpoints } };
  if (type === "llava_next_video") {
    const tokenIndex = cfg.video_token_index ?? cfg.video_token_id;
    const poolMode = cfg.spatial_pool_mode ?? "average";
    const poolStride = cfg.spatial_pool_stride ?? 2;
    if (!Number.isInteger(tokenIndex))
      throw new CheckpointError(`${dir}/config.json: llava_next_video needs video_token_index`);
    if (poolMode !== "average" && poolMode !== "max")
      throw new CheckpointError(
        `${dir}/config.json: spatial_pool_mode ${JSON.stringify(poolMode)} is not supported (average or max)`,
      );
    if (!(Number.isInteger(poolStride) && poolStride >= 1 && poolStride <= vision.imageSize / vision.patchSize))
      throw new CheckpointError(`${dir}/config.json: spatial_pool_stride ${poolStride} does not fit the patch grid`);
    out.video = { tokenIndex, poolMode, poolStride };
  }
  return out;
}

export interface LoadOptions {
  /** Directory of the CLIP vision tower for the original layout (default: `<dir>/vision_tower`). */
  visionTowerDir?: string;
}

/** Loads a LLaVA checkpoint directory in any of the three layouts. */
export function loadLlava(dir: string, opts: LoadOptions = {}): LlavaWeights {
  if (!existsSync(join(dir, "config.json")))
    throw new CheckpointError(`${dir}: no config.json (is this a model directory?)`);
  const cfg = readJson(join(dir, "config.json"));
  const pre = existsSync(join(dir, "preprocessor_config.json")) ? readJson(join(dir, "preprocessor_config.json")) : {};
  const src = new TensorSource(dir);
  try {
    let prefixes: { text: string; head: string; vision: string; proj1: string; proj2: string; newline: string };
    let text: TextConfig;
    let vision: VisionConfig;
    let visionSrc = src;
    if (src.has("language_model.model.embed_tokens.weight") || src.has("model.language_model.embed_tokens.weight")) {
      const legacy = src.has("language_model.model.embed_tokens.weight");
      prefixes = legacy
        ? {
            text: "language_model.model.",
            head: "language_model.lm_head.weight",
            vision: "vision_tower.vision_model.",
            proj1: "multi_modal_projector.linear_1",
            proj2: "multi_modal_projector.linear_2",
            newline: "image_newline",
          }
        : {
            text: "model.language_model.",
            head: "lm_head.weight",
            vision: "model.vision_tower.vision_model.",
            proj1: "model.multi_modal_projector.linear_1",
            proj2: "model.multi_modal_projector.linear_2",
            newline: "model.image_newline",
          };
      if (!cfg.text_config || !cfg.vision_config)
        throw new CheckpointError(`${dir}/config.json: an HF LLaVA config needs text_config and vision_config`);
      text = textConfig(cfg.text_config);
      vision = visionConfig(cfg.vision_config);
    } else if (src.has("model.embed_tokens.weight")) {
      const towerDir = opts.visionTowerDir ?? join(dir, "vision_tower");
      if (!existsSync(join(towerDir, "config.json"))) {
        throw new CheckpointError(
          `${dir}: original LLaVA layout needs the CLIP vision tower directory (looked in ${towerDir})`,
        );
      }
      const towerCfg = readJson(join(towerDir, "config.json"));
      visionSrc = new TensorSource(towerDir);
      prefixes = {
        text: "model.",
        head: "lm_head.weight",
        vision: "vision_model.",
        proj1: "model.mm_projector.0",
        proj2: "model.mm_projector.2",
        newline: "model.image_newline",
      };
      text = textConfig(cfg);
      vision = visionConfig(towerCfg.vision_config ?? towerCfg);
      if (cfg.mm_projector_type && cfg.mm_projector_type !== "mlp2x_gelu") {
        throw new CheckpointError(`${dir}: projector type ${cfg.mm_projector_type} is not supported (mlp2x_gelu only)`);
      }
    } else {
      throw new CheckpointError(`${dir}: not a LLaVA checkpoint (no embed_tokens tensor under a known prefix)`);
    }
    const config: LlavaConfig = {
      text,
      vision,
      imageTokenIndex: cfg.image_token_index ?? cfg.image_token_id ?? 32000,
      visionFeatureLayer: cfg.vision_feature_layer ?? cfg.mm_vision_select_layer ?? -2,
      visionFeatureSelectStrategy:
        (cfg.vision_feature_select_strategy ?? (cfg.mm_vision_select_feature === "cls_patch" ? "full" : "default")) ===
        "full"
          ? "full"
          : "default",
      projectorHiddenAct: "gelu",
      imageMean: pre.image_mean ?? [0.48145466, 0.4578275, 0.40821073],
      imageStd: pre.image_std ?? [0.26862954, 0.26130258, 0.27577711],
      ...nextConfig(dir, cfg, pre, vision),
    };
    if (config.anyres && config.visionFeatureSelectStrategy === "full")
      throw new CheckpointError(`${dir}: LLaVA-NeXT needs vision_feature_select_strategy "default" (CLS dropped)`);
    const H = text.hiddenSize;
    const W = vision.hiddenSize;
    return {
      config,
      imageNewline: config.anyres ? src.read(prefixes.newline, [H]) : undefined,
      vision: loadVision(visionSrc, prefixes.vision, vision),
      projector: {
        linear1: {
          weight: src.read(`${prefixes.proj1}.weight`, [H, W]),
          bias: src.read(`${prefixes.proj1}.bias`, [H]),
        },
        linear2: {
          weight: src.read(`${prefixes.proj2}.weight`, [H, H]),
          bias: src.read(`${prefixes.proj2}.bias`, [H]),
        },
      },
      text: {
        embedTokens: src.read(`${prefixes.text}embed_tokens.weight`, [text.vocabSize, H]),
        layers: Array.from({ length: text.numLayers }, (_, i) =>
          loadDecoderLayer(src, `${prefixes.text}layers.${i}.`, text),
        ),
        norm: { weight: src.read(`${prefixes.text}norm.weight`, [H]) },
        lmHead: src.read(prefixes.head, [text.vocabSize, H]),
      },
    };
  } finally {
    src.close();
  }
}

/**
 * Loads a twig directory (model.layers.{0..T-1}.*, model.norm.weight, lm_head.weight; K, T, K_f from config.json
 * or the name; config.json's optional `ttp_score_source`, "last-token" or "all-text", is the twig's default scorer,
 * and its optional `default_pruned_fraction`, strictly between 0 and 1, the share pruned when a request names no budget).
 */
export function loadTwig(dir: string, base: LlavaWeights): TwigWeights {
  const cfg = existsSync(join(dir, "config.json")) ? readJson(join(dir, "config.json")) : {};
  const fromName = /K(\d+)-T(\d+)/.exec(dir);
  const k = cfg.twig_K ?? (fromName ? Number(fromName[1]) : undefined);
  const t = cfg.twig_T ?? (fromName ? Number(fromName[2]) : undefined);
  const L = base.config.text.numLayers;
  if (typeof k !== "number" || typeof t !== "number")
    throw new CheckpointError(`${dir}: twig K and T are neither in config.json nor in the directory name`);
  if (k < 1 || t < 1 || k + t > L)
    throw new CheckpointError(`${dir}: twig K=${k} + T=${t} does not fit the base model's ${L} layers`);
  const kf = cfg.final_wipe_layer ?? Math.floor((3 * L) / 4);
  if (!(kf > k && kf <= L)) throw new CheckpointError(`${dir}: final wipe layer ${kf} must be in (K=${k}, L=${L}]`);
  const scoreSource = cfg.ttp_score_source ?? "last-token";
  if (!isScoreSource(scoreSource))
    throw new CheckpointError(
      `${dir}: ttp_score_source must be ${SCORE_SOURCES.map((s) => `"${s}"`).join(" or ")}, got ${JSON.stringify(scoreSource)}`,
    );
  const pruned = cfg.default_pruned_fraction;
  if (pruned !== undefined && !isPrunedFraction(pruned))
    throw new CheckpointError(
      `${dir}: default_pruned_fraction must be a number between 0 and 1 (both excluded), got ${JSON.stringify(pruned)}`,
    );
  const src = new TensorSource(dir);
  try {
    const c = base.config.text;
    return {
      k,
      t,
      finalWipeLayer: kf,
      scoreSource,
      defaultPrunedFraction: pruned,
      layers: Array.from({ length: t }, (_, i) => loadDecoderLayer(src, `model.layers.${i}.`, c)),
      norm: { weight: src.read("model.norm.weight", [c.hiddenSize]) },
      lmHead: src.read("lm_head.weight", [c.vocabSize, c.hiddenSize]),
    };
  } finally {
    src.close();
  }
}
