/**
 * Decoder self-attention over past KV plus S new tokens, in two interchangeable forms:
 *
 * - `contrib` (fast): com.microsoft RotaryEmbedding on q and k at explicit position ids,
 *   then GroupQueryAttention with do_rotary=0 (GQA's own rotary would take positions from
 *   seqlens_k, always contiguous, which pruned tokens are not).
 * - `plain` (for checking): standard ONNX ops only. Rotary gathers cos/sin rows at the
 *   position ids (HF's rotate_half form); scores = q k^T / sqrt(hd) + mask, where the mask
 *   lets new token i (cache index P + i) see cache indices 0..P+i; softmax; probs v.
 *
 * Both take q [1, S, heads*hd], k and v [1, S, kvHeads*hd] and past [1, kvHeads, P, hd],
 * and give out [1, S, heads*hd], present [1, kvHeads, P+S, hd] and, if asked, the
 * attention probabilities [1, heads, S, P+S].
 */
import { float, type GraphBuilder } from "./graph.js";
import { rotary } from "./layers.js";

export type AttentionImpl = "contrib" | "plain";
export const ATTENTION_IMPLS: readonly AttentionImpl[] = ["contrib", "plain"];

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

export interface AttentionResult {
  out: string;
  presentKey: string;
  presentValue: string;
  probs?: string;
}

/** Values shared by every layer of a segment. */
export interface AttentionContext {
  impl: AttentionImpl;
  shape: AttentionShape;
  /** contrib: position ids [1, S], seqlens_k [1], total_sequence_length [], cos/sin caches [maxPos, hd/2]. */
  positions: string;
  seqlens: string;
  total: string;
  cos: string;
  sin: string;
  /** plain: cos/sin rows at the positions [1, 1, S, hd/2] and the additive mask [S, P+S]. */
  cosAt?: string;
  sinAt?: string;
  mask?: string;
}

/** Builds the per-segment values of the plain path (gathered cos/sin, the causal + past mask). */
export function plainContext(
  g: GraphBuilder,
  ctx: AttentionContext,
  hidden: string,
  pastKey: string,
): AttentionContext {
  const gatherAt = (cache: string) =>
    g.op("Unsqueeze", [g.op("Gather", [cache, ctx.positions], { axis: 0 })[0], g.ints("axis1", [1])])[0];
  const scalar = (v: number) => g.weight("scalar", [], BigInt64Array.of(BigInt(v)), "int64");
  const dim = (t: string, i: number) => g.op("Gather", [g.op("Shape", [t])[0], scalar(i)], { axis: 0 })[0];
  const s = dim(hidden, 1);
  const p = dim(pastKey, 2);
  const [t] = g.op("Add", [p, s]);
  const [rows] = g.op("Unsqueeze", [g.op("Range", [p, t, scalar(1)])[0], g.ints("axis1", [1])]);
  const [cols] = g.op("Range", [scalar(0), t, scalar(1)]);
  const [allowed] = g.op("LessOrEqual", [cols, rows]);
  const zero = g.weight("zero", [], new Float32Array([0]));
  const blocked = g.weight("neg_inf", [], new Float32Array([Number.NEGATIVE_INFINITY]));
  const [mask] = g.op("Where", [allowed, zero, blocked]);
  return { ...ctx, cosAt: gatherAt(ctx.cos), sinAt: gatherAt(ctx.sin), mask };
}

export function attention(
  g: GraphBuilder,
  ctx: AttentionContext,
  q: string,
  k: string,
  v: string,
  pastKey: string,
  pastValue: string,
  wantProbs: boolean,
): AttentionResult {
  return ctx.impl === "plain"
    ? plainAttention(g, ctx, q, k, v, pastKey, pastValue, wantProbs)
    : contribAttention(g, ctx, q, k, v, pastKey, pastValue, wantProbs);
}

function contribAttention(
  g: GraphBuilder,
  ctx: AttentionContext,
  q: string,
  k: string,
  v: string,
  pastKey: string,
  pastValue: string,
  wantProbs: boolean,
): AttentionResult {
  const { heads, kvHeads, headDim } = ctx.shape;
  const qr = rotary(g, q, ctx.positions, ctx.cos, ctx.sin, heads);
  const kr = rotary(g, k, ctx.positions, ctx.cos, ctx.sin, kvHeads);
  const outs = g.op(
    "GroupQueryAttention",
    [qr, kr, v, pastKey, pastValue, ctx.seqlens, ctx.total],
    {
      num_heads: heads,
      kv_num_heads: kvHeads,
      do_rotary: 0,
      scale: float(1 / Math.sqrt(headDim)),
      ...(wantProbs ? { qk_output: 2 } : {}),
    },
    { domain: "com.microsoft", outputs: wantProbs ? 4 : 3 },
  );
  return { out: outs[0], presentKey: outs[1], presentValue: outs[2], probs: wantProbs ? outs[3] : undefined };
}

/** [1, S, n*hd] → [1, n, S, hd] */
function toHeads(g: GraphBuilder, x: string, n: number, hd: number): string {
  const [r] = g.op("Reshape", [x, g.ints("heads_shape", [0, 0, n, hd])]);
  return g.op("Transpose", [r], { perm: [0, 2, 1, 3] })[0];
}

/** HF rotate_half rotary on [1, n, S, hd] with cos/sin rows [1, 1, S, hd/2]. */
function plainRotary(g: GraphBuilder, x: string, cos: string, sin: string, hd: number): string {
  const [x1, x2] = g.op("Split", [x, g.ints("halves", [hd / 2, hd / 2])], { axis: -1 }, { outputs: 2 });
  const mul = (a: string, b: string) => g.op("Mul", [a, b])[0];
  const [r1] = g.op("Sub", [mul(x1, cos), mul(x2, sin)]);
  const [r2] = g.op("Add", [mul(x2, cos), mul(x1, sin)]);
  return g.op("Concat", [r1, r2], { axis: -1 })[0];
}

/** [1, kv, T, hd] → [1, kv*groups, T, hd], kv head j serving query heads j*groups..(j+1)*groups-1. */
function repeatKv(g: GraphBuilder, x: string, kvHeads: number, groups: number, hd: number): string {
  if (groups === 1) return x;
  const [u] = g.op("Unsqueeze", [x, g.ints("axis2", [2])]);
  const [e] = g.op("Expand", [u, g.ints("groups", [1, kvHeads, groups, 1, 1])]);
  return g.op("Reshape", [e, g.ints("merge_groups", [1, kvHeads * groups, -1, hd])])[0];
}

function plainAttention(
  g: GraphBuilder,
  ctx: AttentionContext,
  q: string,
  k: string,
  v: string,
  pastKey: string,
  pastValue: string,
  wantProbs: boolean,
): AttentionResult {
  const { heads, kvHeads, headDim: hd } = ctx.shape;
  if (!ctx.cosAt || !ctx.sinAt || !ctx.mask) throw new Error("plain attention needs plainContext() first");
  const qh = plainRotary(g, toHeads(g, q, heads, hd), ctx.cosAt, ctx.sinAt, hd);
  const kh = plainRotary(g, toHeads(g, k, kvHeads, hd), ctx.cosAt, ctx.sinAt, hd);
  const [presentKey] = g.op("Concat", [pastKey, kh], { axis: 2 });
  const [presentValue] = g.op("Concat", [pastValue, toHeads(g, v, kvHeads, hd)], { axis: 2 });
  const groups = heads / kvHeads;
  const keys = repeatKv(g, presentKey, kvHeads, groups, hd);
  const values = repeatKv(g, presentValue, kvHeads, groups, hd);
  const [kT] = g.op("Transpose", [keys], { perm: [0, 1, 3, 2] });
  const scale = g.weight("attn_scale", [], new Float32Array([1 / Math.sqrt(hd)]));
  const [scores] = g.op("Add", [g.op("Mul", [g.op("MatMul", [qh, kT])[0], scale])[0], ctx.mask]);
  const [probs] = g.op("Softmax", [scores], { axis: -1 });
  const [ctxOut] = g.op("Transpose", [g.op("MatMul", [probs, values])[0]], { perm: [0, 2, 1, 3] });
  const [out] = g.op("Reshape", [ctxOut, g.ints("merge_heads", [0, 0, heads * hd])]);
  return { out, presentKey, presentValue, probs: wantProbs ? probs : undefined };
}
