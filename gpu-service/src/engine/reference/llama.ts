/**
 * The LLaMA decoder in plain TypeScript, float64, no ONNX: the yardstick the
 * ONNX segments are checked against. Slow and obvious on purpose.
 */
import type { DecoderLayerWeights, NormWeights, Tensor, TextConfig } from "../weights.js";

export type Vec = Float64Array;

/** y = W x + b for W [out, in]. */
export function matvec(w: Tensor, x: ArrayLike<number>, bias?: Tensor): Vec {
  const [rows, cols] = w.shape;
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = bias ? bias.data[r] : 0;
    const off = r * cols;
    for (let c = 0; c < cols; c++) s += w.data[off + c] * x[c];
    y[r] = s;
  }
  return y;
}

export function rmsNormRef(x: Vec, norm: NormWeights, eps: number): Vec {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * norm.weight.data[i]);
}

/** HF rotate_half rotary on one head vector at position p. */
export function rotaryRef(x: Vec, p: number, theta: number): Vec {
  const d = x.length;
  const half = d / 2;
  const y = new Float64Array(d);
  for (let i = 0; i < half; i++) {
    const angle = p / theta ** ((2 * i) / d);
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    y[i] = x[i] * c - x[i + half] * s;
    y[i + half] = x[i + half] * c + x[i] * s;
  }
  return y;
}

/** Per layer: keys[t][kvHead] and values[t][kvHead], rotary already applied to keys. */
export interface RefLayerCache {
  keys: Vec[][];
  values: Vec[][];
}

/**
 * Runs layers over new tokens (hidden rows at `positions`) with causal attention
 * over each layer's cache plus the new tokens; appends to the caches.
 * Returns the hidden rows leaving the last layer and, per layer, the attention
 * probabilities [heads][query][key].
 */
export function decoderLayersRef(
  config: TextConfig,
  layers: DecoderLayerWeights[],
  hidden: Vec[],
  positions: number[],
  caches: RefLayerCache[],
): { hidden: Vec[]; probs: number[][][][] } {
  const hd = config.hiddenSize / config.numHeads;
  const group = config.numHeads / config.numKvHeads;
  let h = hidden.map((r) => Float64Array.from(r));
  const allProbs: number[][][][] = [];
  layers.forEach((w, li) => {
    const cache = caches[li];
    const past = cache.keys.length;
    const xs = h.map((r) => rmsNormRef(r, w.inputNorm, config.rmsNormEps));
    const qs = xs.map((x, t) => {
      const q = matvec(w.q.weight, x, w.q.bias);
      return Array.from({ length: config.numHeads }, (_, hh) =>
        rotaryRef(q.subarray(hh * hd, (hh + 1) * hd), positions[t], config.ropeTheta),
      );
    });
    xs.forEach((x, t) => {
      const k = matvec(w.k.weight, x, w.k.bias);
      const v = matvec(w.v.weight, x, w.v.bias);
      cache.keys.push(
        Array.from({ length: config.numKvHeads }, (_, kh) =>
          rotaryRef(k.subarray(kh * hd, (kh + 1) * hd), positions[t], config.ropeTheta),
        ),
      );
      cache.values.push(Array.from({ length: config.numKvHeads }, (_, kh) => v.slice(kh * hd, (kh + 1) * hd)));
    });
    const probs: number[][][] = Array.from({ length: config.numHeads }, () => []);
    h = h.map((row, t) => {
      const visible = past + t + 1;
      const attn = new Float64Array(config.hiddenSize);
      for (let hh = 0; hh < config.numHeads; hh++) {
        const kh = Math.floor(hh / group);
        const scores = new Float64Array(visible);
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < visible; j++) {
          let s = 0;
          const key = cache.keys[j][kh];
          for (let d = 0; d < hd; d++) s += qs[t][hh][d] * key[d];
          scores[j] = s / Math.sqrt(hd);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j < visible; j++) sum += scores[j] = Math.exp(scores[j] - max);
        const row = new Array<number>(past + h.length).fill(0);
        for (let j = 0; j < visible; j++) {
          const p = scores[j] / sum;
          row[j] = p;
          const val = cache.values[j][kh];
          for (let d = 0; d < hd; d++) attn[hh * hd + d] += p * val[d];
        }
        probs[hh].push(row);
      }
      const o = matvec(w.o.weight, attn, w.o.bias);
      const res = row.map((v, i) => v + o[i]);
      const m = rmsNormRef(res, w.postAttentionNorm, config.rmsNormEps);
      const gate = matvec(w.gate.weight, m, w.gate.bias);
      const up = matvec(w.up.weight, m, w.up.bias);
      const act = gate.map((a, i) => (a / (1 + Math.exp(-a))) * up[i]);
      const down = matvec(w.down.weight, act, w.down.bias);
      return res.map((v, i) => v + down[i]);
    });
    allProbs.push(probs);
  });
  return { hidden: h, probs: allProbs };
}

/** Final norm + LM head on one hidden row. */
export function logitsRef(config: TextConfig, norm: NormWeights, lmHead: Tensor, hidden: Vec): Vec {
  return matvec(lmHead, rmsNormRef(hidden, norm, config.rmsNormEps));
}
