/**
 * A decoder segment: LLaMA layers [a, b) as one ONNX graph.
 *
 * Inputs:  hidden [1, S, H] (the residual stream entering layer a), position_ids
 *          int64 [1, S] (explicit: pruned tokens keep their original positions),
 *          seqlens_k int32 [1] (= past + S - 1) and total_sequence_length int32 []
 *          (= past + S), and past_key_i / past_value_i [1, kvHeads, past, hd] per layer.
 * Outputs: hidden_out [1, S, H], present_key_i / present_value_i [1, kvHeads, past+S, hd],
 *          and, when asked, attn_probs [1, heads, S, past+S] of one layer (for TTP).
 *
 * All layers of a segment hold the same tokens, so one past length serves them all;
 * layers that hold different tokens (TTP's three layouts) are different segments.
 * Attention: com.microsoft RotaryEmbedding on q and k at the explicit positions,
 * then GroupQueryAttention with do_rotary=0 (causal over past + new tokens).
 */
import type { DecoderLayerWeights, TextConfig } from "../types.js";
import { float, GraphBuilder } from "./graph.js";
import { linear, rmsNorm, rotary, rotaryCaches, swiglu } from "./layers.js";

export interface DecoderSegmentSpec {
  config: TextConfig;
  layers: DecoderLayerWeights[];
  /** Index (within `layers`) whose attention probabilities are output as attn_probs. */
  attentionProbsLayer?: number;
  name?: string;
}

export function decoderSegmentGraph(spec: DecoderSegmentSpec): Uint8Array {
  const { config, layers } = spec;
  const g = new GraphBuilder(spec.name ?? "decoder_segment");
  const hd = config.hiddenSize / config.numHeads;
  let h = g.input("hidden", "float32", [1, "S", config.hiddenSize]);
  const positions = g.input("position_ids", "int64", [1, "S"]);
  const seqlens = g.input("seqlens_k", "int32", [1]);
  const total = g.input("total_sequence_length", "int32", []);
  const caches = rotaryCaches(hd, config.maxPositionEmbeddings, config.ropeTheta);
  const cos = g.weight("rope_cos", [config.maxPositionEmbeddings, hd / 2], caches.cos);
  const sin = g.weight("rope_sin", [config.maxPositionEmbeddings, hd / 2], caches.sin);

  layers.forEach((w, i) => {
    const pastK = g.input(`past_key_${i}`, "float32", [1, config.numKvHeads, "P", hd]);
    const pastV = g.input(`past_value_${i}`, "float32", [1, config.numKvHeads, "P", hd]);
    const x = rmsNorm(g, h, w.inputNorm, config.rmsNormEps);
    const q = rotary(g, linear(g, x, w.q, "q"), positions, cos, sin, config.numHeads);
    const k = rotary(g, linear(g, x, w.k, "k"), positions, cos, sin, config.numKvHeads);
    const v = linear(g, x, w.v, "v");
    const wantProbs = spec.attentionProbsLayer === i;
    const outs = g.op(
      "GroupQueryAttention",
      [q, k, v, pastK, pastV, seqlens, total],
      {
        num_heads: config.numHeads,
        kv_num_heads: config.numKvHeads,
        do_rotary: 0,
        scale: float(1 / Math.sqrt(hd)),
        ...(wantProbs ? { qk_output: 2 } : {}),
      },
      { domain: "com.microsoft", outputs: wantProbs ? 4 : 3 },
    );
    g.output(outs[1], `present_key_${i}`, "float32", [1, config.numKvHeads, "T", hd]);
    g.output(outs[2], `present_value_${i}`, "float32", [1, config.numKvHeads, "T", hd]);
    if (wantProbs) g.output(outs[3], "attn_probs", "float32", [1, config.numHeads, "S", "T"]);
    [h] = g.op("Add", [h, linear(g, outs[0], w.o, "o")]);
    const m = rmsNorm(g, h, w.postAttentionNorm, config.rmsNormEps);
    [h] = g.op("Add", [h, swiglu(g, m, w.gate, w.up, w.down)]);
  });
  g.output(h, "hidden_out", "float32", [1, "S", config.hiddenSize]);
  return g.toBytes();
}

/** Final RMSNorm + LM head: hidden [1, S, H] → logits [1, S, V]. */
export function headGraph(
  config: TextConfig,
  norm: DecoderLayerWeights["inputNorm"],
  lmHead: { shape: number[]; data: Float32Array },
): Uint8Array {
  const g = new GraphBuilder("lm_head");
  const h = g.input("hidden", "float32", [1, "S", config.hiddenSize]);
  const x = rmsNorm(g, h, norm, config.rmsNormEps);
  const logits = linear(g, x, { weight: { shape: lmHead.shape, data: lmHead.data } }, "lm_head");
  g.output(logits, "logits", "float32", [1, "S", lmHead.shape[0]]);
  return g.toBytes();
}
