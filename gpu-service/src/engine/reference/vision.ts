/** CLIP ViT + mlp2x_gelu projector in plain float64 TypeScript: the yardstick for onnx/vision.ts. */
import { visionLayersToRun } from "../onnx/vision.js";
import type { LlavaWeights, NormWeights } from "../weights.js";
import { matvec, type Vec } from "./llama.js";

function layerNormRef(x: Vec, n: NormWeights, eps: number): Vec {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let varSum = 0;
  for (const v of x) varSum += (v - mean) ** 2;
  const inv = 1 / Math.sqrt(varSum / x.length + eps);
  return x.map((v, i) => (v - mean) * inv * n.weight.data[i] + (n.bias ? n.bias.data[i] : 0));
}

const erf = (x: number): number => {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-4 checks; use a series/continued-fraction split
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 60; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
};
const geluRef = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
const quickGeluRef = (x: number) => x / (1 + Math.exp(-1.702 * x));

/** pixel values [3, S, S] → projected features [N][textHidden]. */
export function visionRef(weights: LlavaWeights, pixels: Float32Array): Vec[] {
  return visionForwardRef(weights, pixels).features;
}

/** The mlp2x_gelu projector on rows of the tower's width → [rows][textHidden]. */
export function projectRef(weights: LlavaWeights, rows: readonly Vec[]): Vec[] {
  const { linear1, linear2 } = weights.projector;
  return rows.map((r) => matvec(linear2.weight, matvec(linear1.weight, r, linear1.bias).map(geluRef), linear2.bias));
}

/**
 * The vision forward: projected features [N][textHidden], `selected` [N][visionHidden] (the
 * feature layer's rows that become visual tokens, before the projector), and `clsAttention`
 * [N], the attention the CLS query pays each of them in the feature layer (the last layer
 * run), averaged over heads.
 */
export function visionForwardRef(
  weights: LlavaWeights,
  pixels: Float32Array,
): { features: Vec[]; selected: Vec[]; clsAttention: Vec } {
  const { config, vision } = weights;
  const vc = config.vision;
  const p = vc.patchSize;
  const grid = vc.imageSize / p;
  const width = vc.hiddenSize;
  const S = vc.imageSize;
  const kernel = vision.patchEmbedding.data;
  let h: Vec[] = [Float64Array.from(vision.classEmbedding.data)];
  for (let gy = 0; gy < grid; gy++) {
    for (let gx = 0; gx < grid; gx++) {
      const e = new Float64Array(width);
      for (let o = 0; o < width; o++) {
        let s = 0;
        for (let c = 0; c < vc.numChannels; c++)
          for (let ky = 0; ky < p; ky++)
            for (let kx = 0; kx < p; kx++)
              s +=
                kernel[((o * vc.numChannels + c) * p + ky) * p + kx] * pixels[(c * S + gy * p + ky) * S + gx * p + kx];
        e[o] = s;
      }
      h.push(e);
    }
  }
  h = h.map((row, t) => row.map((v, i) => v + vision.positionEmbedding.data[t * width + i]));
  h = h.map((row) => layerNormRef(row, vision.preLayerNorm, vc.layerNormEps));
  const hd = width / vc.numHeads;
  const act = vc.hiddenAct === "quick_gelu" ? quickGeluRef : geluRef;
  const first = config.visionFeatureSelectStrategy === "default" ? 1 : 0;
  let clsAttention: Vec = new Float64Array(h.length - first);
  for (const w of vision.layers.slice(0, visionLayersToRun(vision.layers.length, config.visionFeatureLayer))) {
    const cls = new Float64Array(h.length);
    const x = h.map((row) => layerNormRef(row, w.layerNorm1, vc.layerNormEps));
    const q = x.map((r) => matvec(w.q.weight, r, w.q.bias));
    const k = x.map((r) => matvec(w.k.weight, r, w.k.bias));
    const v = x.map((r) => matvec(w.v.weight, r, w.v.bias));
    h = h.map((row, t) => {
      const ctx = new Float64Array(width);
      for (let head = 0; head < vc.numHeads; head++) {
        const scores = k.map((kr) => {
          let s = 0;
          for (let d = 0; d < hd; d++) s += q[t][head * hd + d] * kr[head * hd + d];
          return s / Math.sqrt(hd);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        if (t === 0) for (let j = 0; j < e.length; j++) cls[j] += e[j] / sum / vc.numHeads;
        e.forEach((pr, j) => {
          for (let d = 0; d < hd; d++) ctx[head * hd + d] += (pr / sum) * v[j][head * hd + d];
        });
      }
      const o = matvec(w.out.weight, ctx, w.out.bias);
      return row.map((val, i) => val + o[i]);
    });
    clsAttention = cls.slice(first);
    h = h.map((row) => {
      const m = matvec(
        w.fc2.weight,
        matvec(w.fc1.weight, layerNormRef(row, w.layerNorm2, vc.layerNormEps), w.fc1.bias).map(act),
        w.fc2.bias,
      );
      return row.map((val, i) => val + m[i]);
    });
  }
  const selected = h.slice(first);
  return { features: projectRef(weights, selected), selected, clsAttention };
}
