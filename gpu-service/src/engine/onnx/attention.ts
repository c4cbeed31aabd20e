/**
 * Decoder self-attention over past KV plus S new tokens, in three interchangeable forms:
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
 *
 * - `direct`: the caches stay where the caller keeps them and are only read, never copied.
 *   The past comes as buffers with spare room, keys transposed [1, kvHeads, hd, C] and values
 *   [1, kvHeads, C, hd] with C >= P, and a mask kv_mask [C] (0 for the P filled slots, -inf
 *   for the spare ones); the new tokens' rotated keys and values go out, as [1, S, kvHeads*hd]
 *   or in the buffers' own orders [1, kvHeads, hd, S] and [1, kvHeads, S, hd], and the caller
 *   writes them into its buffers. Scores are two products,
 *   q K_past^T (+ kv_mask) and q k_new^T (+ new_mask, causal), softmaxed together; the output
 *   is probs_past V_past + probs_new v_new. ONNX Runtime's GroupQueryAttention copies the
 *   whole past into its present output every step, and the Node binding copies every output
 *   again into a fresh ArrayBuffer: for a long context that traffic costs more than the
 *   attention itself. Rotary is com.microsoft RotaryEmbedding at the explicit positions.
 *   The probabilities come out as [1, heads, S, C + S] (spare columns included, at 0).
 */
import type { AttentionChoice, AttentionImpl } from "../options.js";
import { float, type GraphBuilder } from "./graph.js";
import { rotary } from "./layers.js";

/**
 * `auto` picks `direct` for models of this width and more, where the cache is big and the
 * copies GroupQueryAttention and the Node binding make of it every step cost more than the
 * attention (`npm run bench -- engine`), and `contrib` below it, where the cache is small
 * and direct attention's twenty-odd extra nodes per layer cost more than the copies.
 */
export const DIRECT_ATTENTION_MIN_WIDTH = 1024;

export function resolveAttention(choice: AttentionChoice | undefined, hiddenSize: number): AttentionImpl {
  if (choice && choice !== "auto") return choice;
  return hiddenSize >= DIRECT_ATTENTION_MIN_WIDTH ? "direct" : "contrib";
}

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

export interface AttentionResult {
  out: string;
  /** contrib and plain: the whole cache after this step. */
  presentKey?: string;
  presentValue?: string;
  /** direct: only the new tokens' keys (rotated) and values [1, S, kvHeads*hd]. */
  newKey?: string;
  newValue?: string;
  /** direct: the same in the slot buffers' orders, keys [1, kvHeads, hd, S] and values [1, kvHeads, S, hd]. */
  newKeyT?: string;
  newValueHeads?: string;
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
  /** direct: kv_mask [C] over the past buffers' slots, new_mask [groups*S, S] (causal: query row g*S + s sees new token j <= s). */
  kvMask?: string;
  newMask?: string;
  /** direct: q's rotary tables, scaled by 1/sqrt(hd) (scaledRotaryTables). */
  cosQ?: string;
  sinQ?: string;
  /** direct: the past buffers' slot count C as a [1] int64 tensor, computed once for the segment. */
  pastSlots?: string;
  /** direct: positions of the query rows when they are fewer than the new keys' (the last rows; default `positions`). */
  queryPositions?: string;
  /** direct: kv_mask and new_mask side by side, [B, 1, G*S, C+S] (or [G*S, C+S]), made once per segment (directScoreMask). */
  scoreMask?: string;
  /** direct: the probabilities' split, [C, S] (int64). */
  probsSplit?: string;
  /**
   * direct, row-wise (a batched segment with one query head per kv head): q's shape [B, A, Q, kv, hd]
   * (A x Q = S, from new_mask [A, Q, S]), made once per segment; see directAttention.
   */
  queryShape?: string;
}

/**
 * The per-segment values that let every layer's direct attention add its masks in one node and split its
 * probabilities in one: kv_mask [B, 1, 1, C] (or [C]) broadcast over new_mask's G*S rows, beside new_mask
 * [G*S, S] broadcast over the batch (new_mask's first column is 0 in every row: a row always sees new
 * token 0), and the split sizes [C, S]. Row-wise (rowwiseAttention), kv_mask [B, 1, 1, 1, C] and new_mask
 * [A, Q, S] give [B, 1, A, Q, C+S] the same way.
 */
export function directScoreMask(g: GraphBuilder, ctx: AttentionContext, batched: boolean): AttentionContext {
  const { kvMask, newMask, pastSlots } = ctx;
  if (!kvMask || !newMask || !pastSlots) throw new Error("direct attention needs its context");
  const zeroColumn = g.op1("Slice", [newMask, g.ints("zero", [0]), g.ints("one", [1]), g.ints("last_axis", [-1])]);
  const past = g.op1("Add", [kvMask, zeroColumn]); // [B, 1, G*S, C] (or [G*S, C])
  const batchDims = batched ? g.op1("Shape", [kvMask], { start: 0, end: 2 }) : undefined; // [B, 1]
  const fresh = batchDims
    ? g.op1("Expand", [newMask, g.op1("Concat", [batchDims, g.op1("Shape", [newMask])], { axis: 0 })])
    : newMask; // [B, 1, G*S, S] (or [G*S, S]; row-wise, new_mask [A, Q, S]: [B, 1, A, Q, S])
  const s = g.op1("Shape", [newMask], { start: -1 });
  return {
    ...ctx,
    scoreMask: g.op1("Concat", [past, fresh], { axis: -1 }),
    probsSplit: g.op1("Concat", [pastSlots, s], { axis: 0 }),
  };
}

/** Builds the per-segment values of the plain path (gathered cos/sin, the causal + past mask). */
export function plainContext(
  g: GraphBuilder,
  ctx: AttentionContext,
  hidden: string,
  pastKey: string,
): AttentionContext {
  const gatherAt = (cache: string) =>
    g.op1("Unsqueeze", [g.op1("Gather", [cache, ctx.positions], { axis: 0 }), g.ints("axis1", [1])]);
  const scalar = (v: number) => g.weight("scalar", [], BigInt64Array.of(BigInt(v)), "int64");
  const dim = (t: string, i: number) => g.op1("Gather", [g.op1("Shape", [t]), scalar(i)], { axis: 0 });
  const s = dim(hidden, 1);
  const p = dim(pastKey, 2);
  const [t] = g.op("Add", [p, s]);
  const [rows] = g.op("Unsqueeze", [g.op1("Range", [p, t, scalar(1)]), g.ints("axis1", [1])]);
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
  if (ctx.impl === "plain") return plainAttention(g, ctx, q, k, v, pastKey, pastValue, wantProbs);
  if (ctx.impl === "direct") return directAttention(g, ctx, q, k, v, pastKey, pastValue, wantProbs);
  return contribAttention(g, ctx, q, k, v, pastKey, pastValue, wantProbs);
}

/**
 * `direct` attention; pastKeyT [1, kv, hd, C], pastValue [1, kv, C, hd]. q may hold only the last
 * Q of the S new rows (`queryPositions`, with new_mask's rows for them): k and v hold all S. Query heads are grouped
 * under their kv head (head j uses kv head floor(j / groups)) as rows g*S + s of q
 * [1, kv, groups*S, hd]. For a single new token both big products, q K^T and probs V, are one
 * row times a cache matrix: the CPU kernels' matrix-vector path, which streams the cache once.
 * The 1/sqrt(hd) scale rides in q's rotary tables (`cosQ`, `sinQ`): a scale multiplied onto a
 * product would be fused into it and take it off that path.
 * Every reshape copies the batch dimension, so the same nodes serve a batch of B sequences
 * (onnx/decoder.ts's `batched` segments: past [B, kv, hd, C], kv_mask [B, 1, 1, C]).
 */
function directAttention(
  g: GraphBuilder,
  ctx: AttentionContext,
  q: string,
  k: string,
  v: string,
  pastKeyT: string,
  pastValue: string,
  wantProbs: boolean,
): AttentionResult {
  const { heads, kvHeads, headDim: hd } = ctx.shape;
  if (!ctx.scoreMask || !ctx.probsSplit || !ctx.cosQ || !ctx.sinQ)
    throw new Error("direct attention needs its context");
  const groups = heads / kvHeads;
  const reshape = (x: string, shape: number[]) => g.op1("Reshape", [x, g.ints("shape", shape)]);
  const qr = rotary(g, q, ctx.queryPositions ?? ctx.positions, ctx.cosQ, ctx.sinQ, heads); // scaled by 1/sqrt(hd)
  const kr = rotary(g, k, ctx.positions, ctx.cos, ctx.sin, kvHeads);
  if (ctx.queryShape) return rowwiseAttention(g, ctx, qr, kr, v, pastKeyT, pastValue, wantProbs);
  // [1, kv, G*S, hd] (with one query head per kv head, the plain [1, heads, S, hd]: two nodes fewer)
  const qh =
    groups === 1
      ? toHeads(g, qr, heads, hd)
      : reshape(g.op1("Transpose", [reshape(qr, [0, -1, kvHeads, groups, hd])], { perm: [0, 2, 3, 1, 4] }), [
          0,
          kvHeads,
          -1,
          hd,
        ]);
  const kNewT = g.op1("Transpose", [reshape(kr, [0, -1, kvHeads, hd])], { perm: [0, 2, 3, 1] }); // [1, kv, hd, S]
  const vNew = toHeads(g, v, kvHeads, hd); // [1, kv, S, hd]
  // probs [1, kv, G*S, C+S], out [1, kv, G*S, hd]
  const { probs, out } = attendPastAndNew(g, ctx.scoreMask, ctx.probsSplit, qh, pastKeyT, kNewT, pastValue, vNew);
  const back =
    groups === 1
      ? g.op1("Transpose", [out], { perm: [0, 2, 1, 3] })
      : g.op1("Transpose", [reshape(out, [0, kvHeads, groups, -1, hd])], { perm: [0, 3, 1, 2, 4] });
  return {
    out: reshape(back, [0, -1, heads * hd]),
    newKey: kr,
    newValue: v,
    newKeyT: kNewT, // [B, kv, hd, S]: the key buffers' order
    newValueHeads: vNew, // [B, kv, S, hd]: the value buffers' order
    probs: wantProbs ? reshape(probs, [0, heads, -1, 0]) : undefined, // [B, heads, S, C+S]
  };
}

/**
 * The two score products side by side, both masks added at once (scoreMask [.., C+S], made once per
 * segment: directScoreMask), softmax, the probabilities split back in one node, and
 * probs_past V_past + probs_new v_new: the same values as adding each mask to its product and slicing
 * twice, in two nodes fewer a layer. Shared by directAttention and rowwiseAttention, whose operands
 * differ only in shape.
 */
function attendPastAndNew(
  g: GraphBuilder,
  scoreMask: string,
  probsSplit: string,
  qh: string,
  pastKeyT: string,
  kNewT: string,
  pastValue: string,
  vNew: string,
): { probs: string; out: string } {
  const scores = g.op1("Concat", [g.op1("MatMul", [qh, pastKeyT]), g.op1("MatMul", [qh, kNewT])], { axis: -1 });
  const probs = g.op1("Softmax", [g.op1("Add", [scores, scoreMask])], { axis: -1 });
  const [pPast, pNew] = g.op("Split", [probs, probsSplit], { axis: -1 }, { outputs: 2 });
  const out = g.op1("Add", [g.op1("MatMul", [pPast, pastValue]), g.op1("MatMul", [pNew, vNew])]);
  return { probs, out };
}

/**
 * `direct` attention of a batched segment with one query head per kv head, its S query rows as an
 * A x Q grid (A * Q = S, new_mask [A, Q, S]): pastKeyT [B, kv, 1, hd, C], pastValue [B, kv, 1, C, hd].
 *
 *   q [B, kv, A, Q, hd] x K_past^T [B, kv, 1, hd, C] -> scores [B, kv, A, Q, C]
 *
 * broadcasts the cache over A: A products of Q rows each. A single row times a matrix is the CPU
 * kernels' matrix-vector path, which reads the cache where it lies; a product of two or more rows
 * first copies (packs) the cache's panel, for every sequence and head, which at a few rows costs
 * more than the product (a speculative round verifies 2-4 rows a sequence). So the caller picks
 * A = S, Q = 1 for a few rows (each row its own matrix-vector product: the cache read S times, never
 * packed) and A = 1, Q = S for many (one matrix product: a prompt's rows); a single row is the same
 * product either way. The same for probs_past V_past, and for the new rows' keys and values, which
 * are kept [B, kv, 1, hd, S] and [B, kv, 1, S, hd] likewise. Nothing else changes: the masks,
 * softmax and split of directAttention, on [B, kv, A, Q, C + S].
 */
function rowwiseAttention(
  g: GraphBuilder,
  ctx: AttentionContext,
  qr: string,
  kr: string,
  v: string,
  pastKeyT: string,
  pastValue: string,
  wantProbs: boolean,
): AttentionResult {
  const { heads, kvHeads, headDim: hd } = ctx.shape;
  if (heads !== kvHeads) throw new Error("row-wise attention takes one query head per kv head");
  if (!ctx.queryShape || !ctx.scoreMask || !ctx.probsSplit) throw new Error("direct attention needs its context");
  const reshape = (x: string, shape: number[]) => g.op1("Reshape", [x, g.ints("shape", shape)]);
  const qh = g.op1("Transpose", [g.op1("Reshape", [qr, ctx.queryShape])], { perm: [0, 3, 1, 2, 4] }); // [B, kv, A, Q, hd]
  const kNewT = g.op1("Transpose", [reshape(kr, [0, -1, kvHeads, 1, hd])], { perm: [0, 2, 3, 4, 1] }); // [B, kv, 1, hd, S]
  const vNew = g.op1("Transpose", [reshape(v, [0, -1, kvHeads, 1, hd])], { perm: [0, 2, 3, 1, 4] }); // [B, kv, 1, S, hd]
  // probs [B, kv, A, Q, C+S], out [B, kv, A, Q, hd]
  const { probs, out } = attendPastAndNew(g, ctx.scoreMask, ctx.probsSplit, qh, pastKeyT, kNewT, pastValue, vNew);
  const back = g.op1("Transpose", [out], { perm: [0, 2, 3, 1, 4] }); // [B, A, Q, kv, hd]
  const probsShape = wantProbs
    ? g.op1("Concat", [g.ints("probs_lead", [0, heads, -1]), g.op1("Shape", [probs], { start: -1 })], { axis: 0 })
    : undefined;
  return {
    out: reshape(back, [0, -1, heads * hd]),
    newKey: kr,
    newValue: v,
    probs: probsShape ? g.op1("Reshape", [probs, probsShape]) : undefined, // [B, heads, S, C+S]
  };
}

/** q's rotary tables for `direct` attention: cos and sin times 1/sqrt(hd). */
export function scaledRotaryTables(
  cos: Float32Array,
  sin: Float32Array,
  headDim: number,
): { cos: Float32Array; sin: Float32Array } {
  const s = 1 / Math.sqrt(headDim);
  return { cos: cos.map((x) => x * s), sin: sin.map((x) => x * s) };
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
  return g.op1("Transpose", [r], { perm: [0, 2, 1, 3] });
}

/** HF rotate_half rotary on [1, n, S, hd] with cos/sin rows [1, 1, S, hd/2]. */
function plainRotary(g: GraphBuilder, x: string, cos: string, sin: string, hd: number): string {
  const [x1, x2] = g.op("Split", [x, g.ints("halves", [hd / 2, hd / 2])], { axis: -1 }, { outputs: 2 });
  const mul = (a: string, b: string) => g.op1("Mul", [a, b]);
  const [r1] = g.op("Sub", [mul(x1, cos), mul(x2, sin)]);
  const [r2] = g.op("Add", [mul(x2, cos), mul(x1, sin)]);
  return g.op1("Concat", [r1, r2], { axis: -1 });
}

/** [1, kv, T, hd] → [1, kv*groups, T, hd], kv head j serving query heads j*groups..(j+1)*groups-1. */
function repeatKv(g: GraphBuilder, x: string, kvHeads: number, groups: number, hd: number): string {
  if (groups === 1) return x;
  const [u] = g.op("Unsqueeze", [x, g.ints("axis2", [2])]);
  const [e] = g.op("Expand", [u, g.ints("groups", [1, kvHeads, groups, 1, 1])]);
  return g.op1("Reshape", [e, g.ints("merge_groups", [1, kvHeads * groups, -1, hd])]);
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
  const [scores] = g.op("Add", [g.op1("Mul", [g.op1("MatMul", [qh, kT]), scale]), ctx.mask]);
  const [probs] = g.op("Softmax", [scores], { axis: -1 });
  const [ctxOut] = g.op("Transpose", [g.op1("MatMul", [probs, values])], { perm: [0, 2, 1, 3] });
  const [out] = g.op("Reshape", [ctxOut, g.ints("merge_heads", [0, 0, heads * hd])]);
  return { out, presentKey, presentValue, probs: wantProbs ? probs : undefined };
}
