/**
 * Tiny random LLaVA-NeXT and LLaVA-NeXT-Video checkpoints in the Hugging Face layout
 * (`LlavaNextForConditionalGeneration`, `LlavaNextVideoForConditionalGeneration`): the tiny model's tower,
 * projector and decoder, plus AnyRes grid pinpoints at LLaVA-NeXT's proportions (1x2, 2x1, 2x2, 1x3 and
 * 3x1 tiles), `image_newline`, and for video the `<video>` placeholder and 2x2 average pooling of each
 * frame's patches. Deterministic from a seed; `make-tiny --arch next|next-video` writes them.
 */
import { join } from "node:path";
import { Rng } from "../../src/engine/decoding/sampling.js";
import type { LlavaWeights, TextConfig, VisionConfig } from "../../src/engine/weights.js";
import { growTwig } from "./grow-twig.js";
import {
  randomLlavaWeights,
  randomTensor,
  TINY_WORDS,
  wordTokenizer,
  writeLlavaCheckpoint,
  writeTwig,
} from "./tiny-model.js";

export type NextVariant = "next" | "next-video";

/** LLaVA-NeXT's pinpoints ([[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]) for a tower of `tile` pixels. */
export function nextPinpoints(tile: number): [number, number][] {
  return [
    [tile, 2 * tile],
    [2 * tile, tile],
    [2 * tile, 2 * tile],
    [3 * tile, tile],
    [tile, 3 * tile],
  ];
}

/** Random weights of a NeXT (or NeXT-Video) model: the tiny LLaVA's, an image_newline, the variant's config. */
export function randomNextWeights(
  seed: number,
  variant: NextVariant,
  text: Partial<TextConfig> = {},
  vision: Partial<VisionConfig> = {},
  videoTokenIndex = -1,
): LlavaWeights {
  const w = randomLlavaWeights(seed, text, vision);
  const H = w.config.text.hiddenSize;
  w.config.anyres = { gridPinpoints: nextPinpoints(w.config.vision.imageSize) };
  w.imageNewline = randomTensor(new Rng(seed ^ 0x6e6c), [H], 1 / Math.sqrt(H));
  if (variant === "next-video") {
    const tokenIndex = videoTokenIndex >= 0 ? videoTokenIndex : w.config.text.vocabSize - 2;
    w.config.video = { tokenIndex, poolMode: "average", poolStride: 2 };
  }
  return w;
}

/**
 * A complete tiny NeXT (or NeXT-Video) model directory with `twig/`: 8 decoder layers (or `layers`), K=2, T=2,
 * K_f = 3L/4 (6 of 8). With 24 layers every budget of the paper fits (R-bar down to N/9 needs L > 9K).
 */
export function writeTinyNextModel(dir: string, seed = 0, variant: NextVariant = "next", layers = 8): LlavaWeights {
  const tok = wordTokenizer(
    [...TINY_WORDS, "video", "frame", "moves", "appears"],
    variant === "next-video" ? ["<video>"] : [],
  );
  const weights = randomNextWeights(
    seed,
    variant,
    { numLayers: layers, vocabSize: tok.vocabSize, maxPositionEmbeddings: 384 },
    {},
    tok.ids["<video>"] ?? -1,
  );
  weights.config.imageTokenIndex = tok.imageTokenIndex;
  writeLlavaCheckpoint(dir, weights, "hf", tok.json);
  writeTwig(join(dir, "twig"), growTwig(weights, 2, 2, Math.floor((3 * layers) / 4)));
  return weights;
}
