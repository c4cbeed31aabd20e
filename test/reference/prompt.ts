/**
 * A prompt as the model's first layer sees it, built for the tests from the raw
 * text and the PyTorch-preprocessed picture, without the engine's tokenizer,
 * image preprocessing or embedding code: words looked up in tokenizer.json's
 * vocabulary (the demo model's pre-tokenizer: runs of word characters or of other
 * non-space characters, with <s>, </s> and <image> whole), and the float64
 * reference vision tower (the engine's
 * yardstick, checked against PyTorch by the parity fixture) for the visual rows.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { decoderLayersRef, type Vec } from "../../gpu-service/src/engine/reference/llama.js";
import { visionForwardRef } from "../../gpu-service/src/engine/reference/vision.js";
import type { DecoderLayerWeights, LlavaWeights } from "../../gpu-service/src/engine/weights.js";

const SPECIAL = /(<s>|<\/s>|<image>)/;

/** Token ids of a raw prompt by word lookup in the model's tokenizer.json vocabulary. */
export function wordIds(modelDir: string, text: string): number[] {
  const vocab: Record<string, number> = JSON.parse(readFileSync(join(modelDir, "tokenizer.json"), "utf8")).model.vocab;
  const id = (w: string) => {
    if (!(w in vocab)) throw new Error(`"${w}" is not in the vocabulary`);
    return vocab[w];
  };
  return text
    .split(SPECIAL)
    .flatMap((part) => (SPECIAL.test(part) ? [id(part)] : (part.match(/\w+|[^\w\s]+/g) ?? []).map(id)));
}

/** The prompt's rows (text embeddings with the visual features in place of <image>), float64, and the CLS attention. */
export function promptRows(weights: LlavaWeights, inputIds: readonly number[], pixels: Float32Array) {
  const H = weights.config.text.hiddenSize;
  const at = inputIds.indexOf(weights.config.imageTokenIndex);
  if (at < 0 || inputIds.lastIndexOf(weights.config.imageTokenIndex) !== at) throw new Error("one <image> expected");
  const vision = visionForwardRef(weights, pixels);
  const embed = (id: number) => Float64Array.from(weights.text.embedTokens.data.subarray(id * H, (id + 1) * H));
  const rows: Vec[] = [...inputIds.slice(0, at).map(embed), ...vision.features, ...inputIds.slice(at + 1).map(embed)];
  return { rows, visualStart: at, numVisual: vision.features.length, clsAttention: vision.clsAttention };
}

/** Runs `layers` over the rows from scratch (positions 0..S-1) and returns the last layer's attention probabilities. */
export function lastLayerAttention(weights: LlavaWeights, layers: DecoderLayerWeights[], rows: Vec[]) {
  const positions = rows.map((_, i) => i);
  const out = decoderLayersRef(
    weights.config.text,
    layers,
    rows,
    positions,
    layers.map(() => ({ keys: [], values: [] })),
  );
  return { hidden: out.hidden, probs: out.probs[layers.length - 1] };
}
