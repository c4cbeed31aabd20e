/**
 * Greedy decoding of a pruned LLaVA in float64 (TWIGVLM.md, TTP steps 3-5): base layers 1..K see every
 * prompt row, layers K+1..K_f the text and the kept visual tokens, layers after K_f the text only; every
 * row keeps its original position and generated tokens continue from the unpruned length. With no pruning
 * all layers see everything (the base model). The yardstick for the engine's greedy outputs in the modes
 * that decode without drafting (and, SSD being lossless, in the ones that draft).
 */
import type { LlavaWeights } from "../weights.js";
import { decoderLayersRef, logitsRef, type RefLayerCache, type Vec } from "./llama.js";

export interface PruningRef {
  /** K and K_f (1-based). */
  k: number;
  finalWipeLayer: number;
  /** Indices (0-based, within the visual span) of the visual tokens layers K+1..K_f keep. */
  kept: readonly number[];
}

/** The prompt's rows: token embeddings around the visual tokens, which replace the placeholder at `at`. */
export function promptRowsRef(
  weights: LlavaWeights,
  inputIds: readonly number[],
  at: number,
  visual: readonly Vec[],
): Vec[] {
  const H = weights.config.text.hiddenSize;
  const embed = (id: number) => Float64Array.from(weights.text.embedTokens.data.subarray(id * H, (id + 1) * H));
  return [...inputIds.slice(0, at).map(embed), ...visual, ...inputIds.slice(at + 1).map(embed)];
}

const argmax = (v: Vec) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);

/**
 * Greedy output ids (EOS excluded) of the prompt `rows`, whose visual tokens are rows
 * [visualStart, visualStart + numVisual), pruned as `pruning` says (undefined: the unpruned model).
 */
export function greedyRef(
  weights: LlavaWeights,
  rows: readonly Vec[],
  visualStart: number,
  numVisual: number,
  maxTokens: number,
  pruning?: PruningRef,
): number[] {
  const cfg = weights.config.text;
  const H = cfg.hiddenSize;
  const layers = weights.text.layers;
  const L = layers.length;
  const kept = new Set(pruning?.kept.map((v) => v + visualStart));
  const isVisual = (p: number) => p >= visualStart && p < visualStart + numVisual;
  // the three groups of layers and which prompt positions each sees
  const groups = pruning
    ? [
        { from: 0, to: pruning.k, sees: () => true },
        { from: pruning.k, to: pruning.finalWipeLayer, sees: (p: number) => !isVisual(p) || kept.has(p) },
        { from: pruning.finalWipeLayer, to: L, sees: (p: number) => !isVisual(p) },
      ]
    : [{ from: 0, to: L, sees: () => true }];
  const caches: RefLayerCache[] = layers.map(() => ({ keys: [], values: [] }));
  /** Rows at positions through every group; the last row's logits. */
  const forward = (x: readonly Vec[], positions: number[]): Vec => {
    let h: Vec[] = x.map((r) => Float64Array.from(r));
    let pos = positions;
    for (const g of groups) {
      if (g.from === g.to) continue;
      const keep = pos.flatMap((p, i) => (g.sees(p) ? [i] : []));
      h = keep.map((i) => h[i]);
      pos = keep.map((i) => pos[i]);
      h = decoderLayersRef(cfg, layers.slice(g.from, g.to), h, pos, caches.slice(g.from, g.to)).hidden;
    }
    return logitsRef(cfg, weights.text.norm, weights.text.lmHead, h[h.length - 1]);
  };
  const out: number[] = [];
  let logits = forward(
    rows,
    rows.map((_, i) => i),
  );
  let position = rows.length;
  while (out.length < Math.min(maxTokens, cfg.maxPositionEmbeddings - rows.length)) {
    const id = argmax(logits);
    if (id === cfg.eosTokenId) break;
    out.push(id);
    const row = Float64Array.from(weights.text.embedTokens.data.subarray(id * H, (id + 1) * H));
    logits = forward([row], [position++]);
  }
  return out;
}
