/**
 * A decoder segment: LLaMA layers [a, b) as one ONNX graph.
 *
 * Inputs:  hidden [1, S, H] (the residual stream entering layer a), position_ids
 *          int64 [1, S] (explicit: pruned tokens keep their original positions),
 *          seqlens_k int32 [1] (= past + S - 1) and total_sequence_length int32 []
 *          (= past + S), and past_key_i / past_value_i [1, kvHeads, past, hd] per layer.
 * Outputs: hidden_out [1, S, H], present_key_i / present_value_i [1, kvHeads, past+S, hd],
 *          and, when asked, attn_probs [1, heads, S, past+S] of one layer (for TTP).
 * With `direct` attention the past is read in place from the caller's buffers instead:
 *          past_key_i [1, kvHeads, hd, C] (transposed) and past_value_i [1, kvHeads, C, hd],
 *          kv_mask [C] and new_mask [groups*S, S] replace seqlens_k and total_sequence_length;
 *          the outputs are new_key_i [1, kvHeads, hd, S] and new_value_i [1, kvHeads, S, hd]
 *          (the caller appends them) and attn_probs [1, heads, S, C+S] (onnx/attention.ts).
 *
 * With `outputRows` (direct attention; for the segment that ends the model, whose rows only
 *          the LM head reads), an input out_rows int64 [1] = n: hidden_out is [1, n, H], the last
 *          n rows, and the last layer computes keys and values for all S rows (the caches need
 *          them) but attention, o-proj and MLP only for those n (a prompt's logits are needed for
 *          its last row alone).
 *
 * A `batched` segment (direct attention only) takes B sequences at once, each with its own past
 *          length: hidden [B, S, H], position_ids [B, S], past_key_i [B, kvHeads, hd, C],
 *          past_value_i [B, kvHeads, C, hd], kv_mask [B, 1, 1, C] (each sequence's own filled
 *          slots) and new_mask [groups*S, S]; outputs hidden_out [B, S, H] and new_kv
 *          [B, S, layers * 2 * kvHeads*hd]: each row's new key and value in every layer, side by side
 *          (one output, not two a layer: the Node binding copies each output into an ArrayBuffer of
 *          its own, about 5 us apiece). A sequence with fewer than S new tokens is padded at
 *          the end: the causal new_mask keeps its real rows from seeing the padding
 *          (runtime/batched-segment.ts). With one query head per kv head (rowwiseAttention) the
 *          past buffers, kv_mask and new_mask take one more axis, which lets the caller run a few
 *          new rows as matrix-vector products over the caches (onnx/attention.ts).
 *
 * All layers of a segment hold the same tokens, so one past length serves them all;
 * layers that hold different tokens (TTP's three layouts) are different segments.
 * Attention is onnx/attention.ts's `contrib` path (RotaryEmbedding + GroupQueryAttention)
 * or its `plain` path (standard ops, kept for checking). The contrib path also fuses each
 * residual add with the next RMSNorm (SkipSimplifiedLayerNormalization); q/k/v and gate/up
 * are one matrix product each unless `fuseProjections` is false. Linear weights are fp32,
 * fp16 or int4 (onnx/layers.ts).
 */

import type { AttentionChoice, Precision } from "../options.js";
import type { DecoderLayerWeights, TextConfig } from "../weights.js";
import {
  type AttentionContext,
  attention,
  directScoreMask,
  plainContext,
  resolveAttention,
  scaledRotaryTables,
} from "./attention.js";
import { GraphBuilder } from "./graph.js";
import { fusedLinear, linear, rmsNorm, rotaryCaches, skipRmsNorm, swiglu, type WeightFormat } from "./layers.js";

/** How a decoder graph is built (all optional; the defaults are the fast path in fp32). */
export interface DecoderGraphOptions {
  precision?: Precision;
  /** MatMulNBits accuracy_level for int4 (default 4). */
  int4AccuracyLevel?: number;
  /** MatMulNBits block size for int4 (default 32). */
  int4BlockSize?: number;
  /** The attention implementation, or `auto` (resolveAttention; the default). */
  attention?: AttentionChoice;
  /** q/k/v and gate/up as one MatMul each (default true). */
  fuseProjections?: boolean;
}

export interface DecoderSegmentSpec extends DecoderGraphOptions {
  config: TextConfig;
  layers: DecoderLayerWeights[];
  /** Index (within `layers`) whose attention probabilities are output as attn_probs. */
  attentionProbsLayer?: number;
  name?: string;
  /** B sequences per run, each with its own past length (needs direct attention). */
  batched?: boolean;
  /** hidden_out holds only the last out_rows rows (direct attention only, not batched; see the opening comment). */
  outputRows?: boolean;
}

export function weightFormat(o: DecoderGraphOptions): WeightFormat {
  return { precision: o.precision ?? "fp32", int4AccuracyLevel: o.int4AccuracyLevel, int4BlockSize: o.int4BlockSize };
}

export function decoderSegmentGraph(spec: DecoderSegmentSpec): Uint8Array {
  return decoderSegmentBuilder(spec).toBytes();
}

/**
 * Whether a batched segment of this model runs its attention row-wise (onnx/attention.ts's
 * rowwiseAttention: past_key_i [B, kv, 1, hd, C], past_value_i [B, kv, 1, C, hd], kv_mask
 * [B, 1, 1, 1, C], new_mask [A, Q, S] with A x Q = S, the caller's choice): one query head per kv
 * head. With grouped heads a single new row is already G query rows, one matrix product per kv head.
 */
export function rowwiseAttention(config: TextConfig): boolean {
  return config.numHeads === config.numKvHeads;
}

export function decoderSegmentBuilder(spec: DecoderSegmentSpec): GraphBuilder {
  const { config, layers } = spec;
  const g = new GraphBuilder(spec.name ?? "decoder_segment");
  const format = weightFormat(spec);
  const fuse = spec.fuseProjections ?? true;
  const batched = spec.batched ?? false;
  const impl = batched ? "direct" : resolveAttention(spec.attention, config.hiddenSize);
  if (batched && spec.attention !== undefined && spec.attention !== "auto" && spec.attention !== "direct")
    throw new RangeError(`a batched segment needs direct attention, not ${spec.attention}`);
  const b = batched ? "B" : 1;
  if (batched && spec.outputRows) throw new RangeError("a batched segment pads its rows at the end: no outputRows");
  const eps = config.rmsNormEps;
  const hd = config.hiddenSize / config.numHeads;
  let h = g.input("hidden", "float32", [b, "S", config.hiddenSize]);
  const positions = g.input("position_ids", "int64", [b, "S"]);
  const direct = impl === "direct";
  const seqlens = direct ? "" : g.input("seqlens_k", "int32", [1]);
  const total = direct ? "" : g.input("total_sequence_length", "int32", []);
  const caches = rotaryCaches(hd, config.maxPositionEmbeddings, config.ropeTheta);
  const cos = g.weight("rope_cos", [config.maxPositionEmbeddings, hd / 2], caches.cos);
  const sin = g.weight("rope_sin", [config.maxPositionEmbeddings, hd / 2], caches.sin);
  // a batched segment with one query head per kv head runs its attention row-wise (onnx/attention.ts)
  const rowwise = batched && rowwiseAttention(config);
  const past = layers.map((_, i) => ({
    key: g.input(
      `past_key_${i}`,
      "float32",
      rowwise
        ? [b, config.numKvHeads, 1, hd, "C"]
        : direct
          ? [b, config.numKvHeads, hd, "C"]
          : [1, config.numKvHeads, "P", hd],
    ),
    value: g.input(
      `past_value_${i}`,
      "float32",
      rowwise ? [b, config.numKvHeads, 1, "C", hd] : [b, config.numKvHeads, direct ? "C" : "P", hd],
    ),
  }));
  let ctx: AttentionContext = {
    impl,
    shape: { heads: config.numHeads, kvHeads: config.numKvHeads, headDim: hd },
    positions,
    seqlens,
    total,
    cos,
    sin,
  };
  if (impl === "plain" && layers.length > 0) ctx = plainContext(g, ctx, h, past[0].key);
  if (direct) {
    const scaled = scaledRotaryTables(caches.cos, caches.sin, hd);
    const newMask = g.input("new_mask", "float32", rowwise ? ["A", "Q", "S"] : ["R", "S"]);
    ctx = {
      ...ctx,
      kvMask: g.input("kv_mask", "float32", rowwise ? ["B", 1, 1, 1, "C"] : batched ? ["B", 1, 1, "C"] : ["C"]),
      newMask,
      cosQ: g.weight("rope_cos_q", [config.maxPositionEmbeddings, hd / 2], scaled.cos),
      sinQ: g.weight("rope_sin_q", [config.maxPositionEmbeddings, hd / 2], scaled.sin),
      pastSlots: layers.length > 0 ? g.op1("Shape", [past[0].key], { start: -1 }) : undefined,
    };
    if (rowwise && layers.length > 0) {
      // q's shape [B, A, Q, kv, hd], from hidden's batch and new_mask's grid of query rows
      const dims = [
        g.op1("Shape", [h], { start: 0, end: 1 }),
        g.op1("Shape", [newMask], { start: 0, end: 2 }),
        g.ints("head_dims", [config.numKvHeads, hd]),
      ];
      ctx.queryShape = g.op1("Concat", dims, { axis: 0 });
    }
    if (layers.length > 0) ctx = directScoreMask(g, ctx, batched);
  }

  const lastLayer = layers.length - 1;
  const trailing =
    spec.outputRows && layers.length > 0
      ? trailingRows(g, ctx, positions, direct, spec.attentionProbsLayer === lastLayer)
      : undefined;
  let x = layers.length > 0 ? rmsNorm(g, h, layers[0].inputNorm, eps) : h;
  /** A batched segment's new keys and values, layer by layer (key, value), for the one output new_kv. */
  const newKv: string[] = [];
  layers.forEach((w, i) => {
    const [qAll, k, v] = fuse
      ? fusedLinear(g, x, [w.q, w.k, w.v], "qkv", format)
      : [linear(g, x, w.q, "q", format), linear(g, x, w.k, "k", format), linear(g, x, w.v, "v", format)];
    // the last layer with outputRows: queries, and so everything after attention, for the last rows only
    const tail = i === lastLayer ? trailing : undefined;
    const q = tail ? tail.rows(qAll) : qAll;
    if (tail) h = tail.rows(h);
    const wantProbs = spec.attentionProbsLayer === i;
    const att = attention(g, tail ? tail.ctx : ctx, q, k, v, past[i].key, past[i].value, wantProbs);
    if (att.presentKey && att.presentValue) {
      g.output(att.presentKey, `present_key_${i}`, "float32", [1, config.numKvHeads, "T", hd]);
      g.output(att.presentValue, `present_value_${i}`, "float32", [1, config.numKvHeads, "T", hd]);
    }
    if (att.newKey && att.newValue) {
      // a segment's new keys and values in its slot buffers' orders (whole rows to copy); a batch's as rows
      if (batched) newKv.push(att.newKey, att.newValue);
      else if (att.newKeyT && att.newValueHeads) {
        g.output(att.newKeyT, `new_key_${i}`, "float32", [1, config.numKvHeads, hd, "S"]);
        g.output(att.newValueHeads, `new_value_${i}`, "float32", [1, config.numKvHeads, "S", hd]);
      }
    }
    if (att.probs) g.output(att.probs, "attn_probs", "float32", [b, config.numHeads, "S", "T"]);
    const o = linear(g, att.out, w.o, "o", format);
    let m: string;
    if (impl !== "plain") ({ normed: m, sum: h } = skipRmsNorm(g, o, h, w.postAttentionNorm, eps));
    else {
      [h] = g.op("Add", [h, o]);
      m = rmsNorm(g, h, w.postAttentionNorm, eps);
    }
    const mlp = swiglu(g, m, w.gate, w.up, w.down, format, fuse);
    const next = layers[i + 1];
    if (next && impl !== "plain") ({ normed: x, sum: h } = skipRmsNorm(g, mlp, h, next.inputNorm, eps));
    else {
      [h] = g.op("Add", [h, mlp]);
      if (next) x = rmsNorm(g, h, next.inputNorm, eps);
    }
  });
  g.output(h, "hidden_out", "float32", [b, trailing ? "N" : "S", config.hiddenSize]);
  if (newKv.length > 0)
    g.output(g.op1("Concat", newKv, { axis: -1 }), "new_kv", "float32", [
      b,
      "S",
      layers.length * 2 * config.numKvHeads * hd,
    ]);
  return g;
}

/**
 * `outputRows`: the input out_rows (n), a way to take the last n rows of a [1, S, ...] tensor, and
 * the attention context of queries at those rows (their positions, new_mask's rows for them).
 */
function trailingRows(
  g: GraphBuilder,
  ctx: AttentionContext,
  positions: string,
  direct: boolean,
  probsInLastLayer: boolean,
): { rows: (t: string) => string; ctx: AttentionContext } {
  if (!direct) throw new Error("outputRows needs direct attention");
  if (probsInLastLayer) throw new Error("outputRows leaves no attention probabilities in the last layer");
  if (!ctx.newMask) throw new Error("direct attention needs new_mask");
  const n = g.input("out_rows", "int64", [1]);
  const [from] = g.op("Neg", [n]);
  const toEnd = g.ints("rows_to_end", [2 ** 40]);
  const rowAxis = g.ints("row_axis", [1]);
  const rows = (t: string) => g.op1("Slice", [t, from, toEnd, rowAxis]);
  // new_mask [groups*S, S] -> [groups, S, S] -> its last n rows per group -> [groups*n, S]
  const [s] = g.op("Shape", [positions], { start: 1, end: 2 });
  const groups = ctx.shape.heads / ctx.shape.kvHeads;
  const [grouped] = g.op("Concat", [g.ints("mask_groups", [groups, -1]), s], { axis: 0 });
  const [flat] = g.op("Concat", [g.ints("mask_rows", [-1]), s], { axis: 0 });
  const [byGroup] = g.op("Reshape", [ctx.newMask, grouped]);
  const [mask] = g.op("Reshape", [rows(byGroup), flat]);
  const tail: AttentionContext = { ...ctx, queryPositions: rows(positions), newMask: mask };
  return { rows, ctx: directScoreMask(g, tail, false) };
}

/** Final RMSNorm + LM head: hidden [1, S, H] → logits [1, S, V]. */
export function headGraph(
  config: TextConfig,
  norm: DecoderLayerWeights["inputNorm"],
  lmHead: { shape: number[]; data: Float32Array },
  options: DecoderGraphOptions = {},
): Uint8Array {
  return headBuilder(config, norm, lmHead, options).toBytes();
}

export function headBuilder(
  config: TextConfig,
  norm: DecoderLayerWeights["inputNorm"],
  lmHead: { shape: number[]; data: Float32Array },
  options: DecoderGraphOptions = {},
): GraphBuilder {
  const g = new GraphBuilder("lm_head");
  const h = g.input("hidden", "float32", [1, "S", config.hiddenSize]);
  const x = rmsNorm(g, h, norm, config.rmsNormEps);
  const logits = linear(g, x, { weight: { shape: lmHead.shape, data: lmHead.data } }, "lm_head", weightFormat(options));
  g.output(logits, "logits", "float32", [1, "S", lmHead.shape[0]]);
  return g;
}
