/**
 * Runs a decoder segment (layers [a, b)) on new tokens against its KV caches.
 * The caller owns the caches: this appends the new tokens to them.
 */
import { type DecoderGraphOptions, decoderSegmentBuilder } from "../onnx/decoder.js";
import type { DecoderLayerWeights, Tensor, TextConfig } from "../types.js";
import { createGraphSession, type ExternalDataOptions } from "./graph-cache.js";
import { KvCache } from "./kv-cache.js";
import { ort, type SessionOptions } from "./session.js";

/** Everything that decides how a segment is built and run. */
export type SegmentOptions = SessionOptions & DecoderGraphOptions & ExternalDataOptions;

/** The graph options of a runtime's options (only these change the graph). */
export function graphOptions(o: DecoderGraphOptions): DecoderGraphOptions {
  return {
    precision: o.precision ?? "fp32",
    int4AccuracyLevel: o.int4AccuracyLevel,
    attention: o.attention ?? "contrib",
    fuseProjections: o.fuseProjections ?? true,
  };
}

export function layerTensors(layers: readonly DecoderLayerWeights[]): Tensor[] {
  return layers.flatMap((w) =>
    [w.inputNorm, w.q, w.k, w.v, w.o, w.postAttentionNorm, w.gate, w.up, w.down].flatMap((p) =>
      p.bias ? [p.weight, p.bias] : [p.weight],
    ),
  );
}

export interface SegmentResult {
  /** [S, H] row-major. */
  hidden: Float32Array;
  /** [heads, S, total] when the segment was built with attention output. */
  attentionProbs?: Float32Array;
}

export class DecoderSegment {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly config: TextConfig,
    readonly numLayers: number,
    readonly hasAttentionProbs: boolean,
  ) {}

  static async create(
    config: TextConfig,
    layers: DecoderLayerWeights[],
    opts: SegmentOptions & { attentionProbsLayer?: number } = {},
  ): Promise<DecoderSegment> {
    const graph = graphOptions(opts);
    const session = await createGraphSession(
      {
        name: "decoder",
        options: { config, attentionProbsLayer: opts.attentionProbsLayer ?? null, ...graph },
        weights: layerTensors(layers),
        build: () => decoderSegmentBuilder({ config, layers, attentionProbsLayer: opts.attentionProbsLayer, ...graph }),
      },
      opts,
    );
    return new DecoderSegment(session, config, layers.length, opts.attentionProbsLayer !== undefined);
  }

  newCaches(): KvCache[] {
    const hd = this.config.hiddenSize / this.config.numHeads;
    return Array.from({ length: this.numLayers }, () => new KvCache(this.config.numKvHeads, hd));
  }

  async run(hidden: Float32Array, positions: readonly number[], caches: KvCache[]): Promise<SegmentResult> {
    const s = positions.length;
    const { hiddenSize, numKvHeads } = this.config;
    const hd = hiddenSize / this.config.numHeads;
    if (hidden.length !== s * hiddenSize) throw new RangeError(`hidden has ${hidden.length} values for ${s} tokens`);
    const past = caches[0].length;
    const feeds: Record<string, ort.Tensor> = {
      hidden: new ort.Tensor("float32", hidden, [1, s, hiddenSize]),
      position_ids: new ort.Tensor("int64", BigInt64Array.from(positions.map(BigInt)), [1, s]),
      seqlens_k: new ort.Tensor("int32", Int32Array.of(past + s - 1), [1]),
      total_sequence_length: new ort.Tensor("int32", Int32Array.of(past + s), []),
    };
    caches.forEach((c, i) => {
      if (c.length !== past)
        throw new RangeError(`layer caches of one segment differ in length (${c.length} vs ${past})`);
      feeds[`past_key_${i}`] = new ort.Tensor("float32", c.key, [1, numKvHeads, past, hd]);
      feeds[`past_value_${i}`] = new ort.Tensor("float32", c.value, [1, numKvHeads, past, hd]);
    });
    const out = await this.session.run(feeds);
    caches.forEach((c, i) => {
      c.set(out[`present_key_${i}`].data as Float32Array, out[`present_value_${i}`].data as Float32Array);
    });
    return {
      hidden: out.hidden_out.data as Float32Array,
      attentionProbs: this.hasAttentionProbs ? (out.attn_probs.data as Float32Array) : undefined,
    };
  }

  /** Writes ONNX Runtime's profile (only for segments created with `profileFilePrefix`). */
  endProfiling(): void {
    this.session.endProfiling();
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
