/**
 * Model building blocks on top of GraphBuilder, named as in the papers:
 * `linear`, `rmsNorm`, `layerNorm`, `swiglu`, `quickGelu`, `gelu`, `rotary`, `attention`.
 * Weights arrive in the HF layout (Linear [out, in]) and are stored transposed for MatMul.
 */
import type { LinearWeights, NormWeights, Tensor } from "../types.js";
import { float, type GraphBuilder } from "./graph.js";

/** [out, in] row-major → [in, out] row-major. */
export function transpose2d(t: Tensor): Float32Array {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = t.data[r * cols + c];
  return out;
}

/** y = x W^T + b */
export function linear(g: GraphBuilder, x: string, w: LinearWeights, name = "linear"): string {
  const [out, inp] = w.weight.shape;
  const weight = g.weight(`${name}_w`, [inp, out], transpose2d(w.weight));
  let [y] = g.op("MatMul", [x, weight]);
  if (w.bias) [y] = g.op("Add", [y, g.weight(`${name}_b`, [out], w.bias.data)]);
  return y;
}

/** x / sqrt(mean(x^2) + eps) * gamma */
export function rmsNorm(g: GraphBuilder, x: string, norm: NormWeights, eps: number): string {
  const gamma = g.weight("rms_gamma", [norm.weight.shape[0]], norm.weight.data);
  return g.op("SimplifiedLayerNormalization", [x, gamma], { axis: -1, epsilon: float(eps) })[0];
}

export function layerNorm(g: GraphBuilder, x: string, norm: NormWeights, eps: number): string {
  const n = norm.weight.shape[0];
  const gamma = g.weight("ln_gamma", [n], norm.weight.data);
  const beta = g.weight("ln_beta", [n], norm.bias ? norm.bias.data : new Float32Array(n));
  return g.op("LayerNormalization", [x, gamma, beta], { axis: -1, epsilon: float(eps) })[0];
}

/** down(silu(gate(x)) * up(x)) — LLaMA's MLP. */
export function swiglu(
  g: GraphBuilder,
  x: string,
  gate: LinearWeights,
  up: LinearWeights,
  down: LinearWeights,
): string {
  const a = linear(g, x, gate, "gate");
  const [silu] = g.op("Mul", [a, g.op("Sigmoid", [a])[0]]);
  const [prod] = g.op("Mul", [silu, linear(g, x, up, "up")]);
  return linear(g, prod, down, "down");
}

/** CLIP's activation: x * sigmoid(1.702 x). */
export function quickGelu(g: GraphBuilder, x: string): string {
  const k = g.weight("qgelu_k", [], new Float32Array([1.702]));
  const [sig] = g.op("Sigmoid", [g.op("Mul", [x, k])[0]]);
  return g.op("Mul", [x, sig])[0];
}

/** Exact (erf) GELU. */
export function gelu(g: GraphBuilder, x: string): string {
  return g.op("Gelu", [x])[0];
}

/** HF LLaMA rotary (rotate_half, not interleaved) at explicit position ids: x [B, S, heads*hd]. */
export function rotary(g: GraphBuilder, x: string, positions: string, cos: string, sin: string, heads: number): string {
  return g.op(
    "RotaryEmbedding",
    [x, positions, cos, sin],
    { interleaved: 0, num_heads: heads },
    { domain: "com.microsoft" },
  )[0];
}

/** cos/sin caches [maxPos, hd/2] for rotary with base theta. */
export function rotaryCaches(headDim: number, maxPos: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p / theta ** ((2 * i) / headDim);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
