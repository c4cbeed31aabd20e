/**
 * Model building blocks on top of GraphBuilder, named as in the papers:
 * `linear`, `rmsNorm`, `layerNorm`, `swiglu`, `quickGelu`, `gelu`, `rotary`, `attention`.
 * Weights arrive in the HF layout (Linear [out, in]) and are stored transposed for MatMul
 * (fp32, or fp16 cast back to fp32 in the graph) or as int4 blocks for com.microsoft MatMulNBits.
 */
import type { Precision } from "../options.js";
import type { LinearWeights, NormWeights, Tensor } from "../weights.js";
import { float, type GraphBuilder } from "./graph.js";
import { INT4_BLOCK, quantizeInt4, toFloat16 } from "./quantize.js";

export interface WeightFormat {
  precision: Precision;
  /** MatMulNBits accuracy_level for int4: 4 (int8 activations, about twice as fast on CPU) unless set. */
  int4AccuracyLevel?: number;
  /** MatMulNBits block_size for int4 (values per scale along the input dimension): INT4_BLOCK unless set. */
  int4BlockSize?: number;
}

export const FP32: WeightFormat = { precision: "fp32" };

/** [out, in] row-major → [in, out] row-major. */
export function transpose2d(t: Tensor): Float32Array {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = t.data[r * cols + c];
  return out;
}

/** y = x W^T + b, with W in the given format. */
export function linear(
  g: GraphBuilder,
  x: string,
  w: LinearWeights,
  name = "linear",
  format: WeightFormat = FP32,
): string {
  const [out, inp] = w.weight.shape;
  let y: string;
  if (format.precision === "int4") {
    const block = format.int4BlockSize ?? INT4_BLOCK;
    const q = quantizeInt4(w.weight.data, out, inp, block);
    const nb = q.scales.length / out;
    const b = g.weight(`${name}_q4`, [out, nb, block / 2], q.packed, "uint8");
    const scales = g.weight(`${name}_scales`, [out * nb], q.scales);
    [y] = g.op(
      "MatMulNBits",
      [x, b, scales],
      { K: inp, N: out, bits: 4, block_size: block, accuracy_level: format.int4AccuracyLevel ?? 4 },
      { domain: "com.microsoft" },
    );
  } else if (format.precision === "fp16") {
    const half = g.weight(`${name}_w16`, [inp, out], toFloat16(transpose2d(w.weight)), "float16");
    [y] = g.op("MatMul", [x, g.op1("Cast", [half], { to: 1 })]);
  } else {
    [y] = g.op("MatMul", [x, g.weight(`${name}_w`, [inp, out], transpose2d(w.weight))]);
  }
  if (w.bias) [y] = g.op("Add", [y, g.weight(`${name}_b`, [out], w.bias.data)]);
  return y;
}

/** Several linears of one input as one matrix product, split back: [q, k, v] or [gate, up]. */
export function fusedLinear(
  g: GraphBuilder,
  x: string,
  ws: LinearWeights[],
  name: string,
  format: WeightFormat = FP32,
): string[] {
  const inp = ws[0].weight.shape[1];
  const outs = ws.map((w) => w.weight.shape[0]);
  if (ws.some((w) => w.weight.shape[1] !== inp)) throw new RangeError(`${name}: fused linears differ in input width`);
  const total = outs.reduce((a, b) => a + b, 0);
  const data = new Float32Array(total * inp);
  let offset = 0;
  for (const w of ws) {
    data.set(w.weight.data, offset);
    offset += w.weight.data.length;
  }
  const withBias = ws.every((w) => w.bias);
  if (!withBias && ws.some((w) => w.bias)) throw new RangeError(`${name}: some fused linears have a bias, some not`);
  const bias = withBias ? concat(ws.map((w) => (w.bias as Tensor).data)) : undefined;
  const y = linear(
    g,
    x,
    { weight: { shape: [total, inp], data }, bias: bias && { shape: [total], data: bias } },
    name,
    format,
  );
  return g.op("Split", [y, g.ints(`${name}_split`, outs)], { axis: -1 }, { outputs: ws.length });
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** x / sqrt(mean(x^2) + eps) * gamma */
export function rmsNorm(g: GraphBuilder, x: string, norm: NormWeights, eps: number): string {
  const gamma = g.weight("rms_gamma", [norm.weight.shape[0]], norm.weight.data);
  return g.op1("SimplifiedLayerNormalization", [x, gamma], { axis: -1, epsilon: float(eps) });
}

/** The residual add and the next RMSNorm in one com.microsoft node: sum = x + skip, normed = rmsNorm(sum). */
export function skipRmsNorm(
  g: GraphBuilder,
  x: string,
  skip: string,
  norm: NormWeights,
  eps: number,
): { normed: string; sum: string } {
  const gamma = g.weight("rms_gamma", [norm.weight.shape[0]], norm.weight.data);
  const [normed, , , sum] = g.op(
    "SkipSimplifiedLayerNormalization",
    [x, skip, gamma],
    { epsilon: float(eps) },
    { domain: "com.microsoft", outputs: [g.fresh("skip_norm"), "", "", g.fresh("skip_sum")] },
  );
  return { normed, sum };
}

export function layerNorm(g: GraphBuilder, x: string, norm: NormWeights, eps: number): string {
  const n = norm.weight.shape[0];
  const gamma = g.weight("ln_gamma", [n], norm.weight.data);
  const beta = g.weight("ln_beta", [n], norm.bias ? norm.bias.data : new Float32Array(n));
  return g.op1("LayerNormalization", [x, gamma, beta], { axis: -1, epsilon: float(eps) });
}

/** down(silu(gate(x)) * up(x)): LLaMA's MLP (gate and up as one matrix product when `fused`). */
export function swiglu(
  g: GraphBuilder,
  x: string,
  gate: LinearWeights,
  up: LinearWeights,
  down: LinearWeights,
  format: WeightFormat = FP32,
  fused = false,
): string {
  const [a, b] = fused
    ? fusedLinear(g, x, [gate, up], "gate_up", format)
    : [linear(g, x, gate, "gate", format), linear(g, x, up, "up", format)];
  const [silu] = g.op("Mul", [a, g.op1("Sigmoid", [a])]);
  const [prod] = g.op("Mul", [silu, b]);
  return linear(g, prod, down, "down", format);
}

/** CLIP's activation: x * sigmoid(1.702 x). */
export function quickGelu(g: GraphBuilder, x: string): string {
  const k = g.weight("qgelu_k", [], new Float32Array([1.702]));
  const [sig] = g.op("Sigmoid", [g.op1("Mul", [x, k])]);
  return g.op1("Mul", [x, sig]);
}

/** Exact (erf) GELU. */
export function gelu(g: GraphBuilder, x: string): string {
  return g.op1("Gelu", [x]);
}

/** HF LLaMA rotary (rotate_half, not interleaved) at explicit position ids: x [B, S, heads*hd]. */
export function rotary(g: GraphBuilder, x: string, positions: string, cos: string, sin: string, heads: number): string {
  return g.op1(
    "RotaryEmbedding",
    [x, positions, cos, sin],
    { interleaved: 0, num_heads: heads },
    { domain: "com.microsoft" },
  );
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
