/**
 * Runs a decoder segment (layers [a, b)) on new tokens against its KV caches.
 * The caller owns the caches (made by `newCaches`, in the layout the segment's attention
 * reads): this appends the new tokens to them.
 */

import { resolveAttention } from "../onnx/attention.js";
import { type DecoderGraphOptions, decoderSegmentBuilder } from "../onnx/decoder.js";
import type { AttentionImpl } from "../options.js";
import type { DecoderLayerWeights, Tensor, TextConfig } from "../weights.js";
import { createGraphSession, type ExternalDataOptions } from "./graph-cache.js";
import { KvCache, type LayerKv, SLOT_CHUNK, SlotKvCache } from "./kv-cache.js";
import { ort, type SessionOptions } from "./session.js";
import { SessionIo, span } from "./tensor-io.js";

/** Everything that decides how a segment is built and run. */
export type SegmentOptions = SessionOptions & DecoderGraphOptions & ExternalDataOptions;

/** The graph options of a runtime's options (only these change the graph). */
export function graphOptions(o: DecoderGraphOptions): DecoderGraphOptions {
  return {
    precision: o.precision ?? "fp32",
    int4AccuracyLevel: o.int4AccuracyLevel,
    int4BlockSize: o.int4BlockSize,
    attention: o.attention ?? "auto",
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

/** The caches, checked to be of the layout this segment made (`newCaches`). */
function ownCaches<T extends LayerKv>(caches: LayerKv[], layout: new (kvHeads: number, headDim: number) => T): T[] {
  return caches.map((c) => {
    if (!(c instanceof layout)) throw new TypeError("this segment's caches come from its own newCaches()");
    return c;
  });
}

const WITHOUT_PROBS: ReadonlySet<string> = new Set(["attn_probs"]);

/** The past of an empty slot cache: buffers of no slots. */
const NO_SLOTS = new Float32Array(0);

export class DecoderSegment {
  private constructor(
    private readonly io: SessionIo,
    readonly config: TextConfig,
    readonly numLayers: number,
    readonly hasAttentionProbs: boolean,
    readonly attention: AttentionImpl,
    /** The graph computes only the rows asked for in its last layer (`outputRows`). */
    private readonly trailing: boolean,
  ) {}

  /**
   * `outputRows`: the segment ends the model (only the LM head reads its rows), so `run` may ask
   * for its last rows only; with direct attention the graph then skips the others' attention and
   * MLP in its last layer (decoder.ts), elsewhere `run` just returns the last rows.
   */
  static async create(
    config: TextConfig,
    layers: DecoderLayerWeights[],
    opts: SegmentOptions & { attentionProbsLayer?: number; name?: string; outputRows?: boolean } = {},
  ): Promise<DecoderSegment> {
    const graph = { ...graphOptions(opts), attention: resolveAttention(opts.attention, config.hiddenSize) };
    const trailing = opts.outputRows === true && graph.attention === "direct" && layers.length > 0;
    const session = await createGraphSession(
      {
        name: "decoder",
        options: {
          config,
          attentionProbsLayer: opts.attentionProbsLayer ?? null,
          ...graph,
          ...(trailing ? { outputRows: true } : {}),
        },
        weights: layerTensors(layers),
        build: () =>
          decoderSegmentBuilder({
            config,
            layers,
            attentionProbsLayer: opts.attentionProbsLayer,
            ...graph,
            outputRows: trailing,
          }),
      },
      opts,
    );
    return new DecoderSegment(
      new SessionIo(session, opts.name ?? "segment"),
      config,
      layers.length,
      opts.attentionProbsLayer !== undefined,
      graph.attention,
      trailing,
    );
  }

  /** Empty caches in this segment's layout; slot caches get room for `capacity` positions (a request's whole length). */
  newCaches(capacity = SLOT_CHUNK): LayerKv[] {
    const hd = this.config.hiddenSize / this.config.numHeads;
    const kv = this.config.numKvHeads;
    const slots = Math.ceil(capacity / SLOT_CHUNK) * SLOT_CHUNK;
    return Array.from({ length: this.numLayers }, () =>
      this.attention === "direct" ? new SlotKvCache(kv, hd, slots) : new KvCache(kv, hd),
    );
  }

  /**
   * Runs the new tokens through the segment, appending them to `caches`. A segment built with
   * attention output returns the probabilities unless `attentionProbs` is false (then they are
   * not copied out of ONNX Runtime: a prompt's are tens of MB). `outputRows`: the hidden rows
   * returned are only the last `outputRows` (default: all); a segment created with `outputRows`
   * (direct attention) does not even compute the others in its last layer.
   */
  async run(
    hidden: Float32Array,
    positions: readonly number[],
    caches: LayerKv[],
    { attentionProbs = true, outputRows }: { attentionProbs?: boolean; outputRows?: number } = {},
  ): Promise<SegmentResult> {
    const s = positions.length;
    const { hiddenSize } = this.config;
    if (hidden.length !== s * hiddenSize) throw new RangeError(`hidden has ${hidden.length} values for ${s} tokens`);
    const rows = outputRows ?? s;
    if (!(Number.isInteger(rows) && rows <= s && (rows >= 1 || s === 0)))
      throw new RangeError(`outputRows ${outputRows} is not between 1 and the ${s} new rows`);
    const past = caches[0].length;
    for (const c of caches)
      if (c.length !== past)
        throw new RangeError(`layer caches of one segment differ in length (${c.length} vs ${past})`);
    const probs = this.hasAttentionProbs && attentionProbs;
    const out =
      this.attention === "direct"
        ? await this.runDirect(hidden, positions, caches, probs, rows)
        : await this.runExact(hidden, positions, caches, probs);
    if (out.hidden.length === rows * hiddenSize) return out;
    return { ...out, hidden: out.hidden.subarray((s - rows) * hiddenSize) };
  }

  private async runExact(
    hidden: Float32Array,
    positions: readonly number[],
    layerCaches: LayerKv[],
    probs: boolean,
  ): Promise<SegmentResult> {
    const caches = ownCaches(layerCaches, KvCache);
    const s = positions.length;
    const { hiddenSize, numKvHeads } = this.config;
    const hd = hiddenSize / this.config.numHeads;
    const past = caches[0].length;
    const feeds = span("feeds", () => {
      const f: Record<string, ort.Tensor> = {
        hidden: new ort.Tensor("float32", hidden, [1, s, hiddenSize]),
        position_ids: new ort.Tensor("int64", BigInt64Array.from(positions.map(BigInt)), [1, s]),
        seqlens_k: new ort.Tensor("int32", Int32Array.of(past + s - 1), [1]),
        total_sequence_length: new ort.Tensor("int32", Int32Array.of(past + s), []),
      };
      caches.forEach((c, i) => {
        f[`past_key_${i}`] = new ort.Tensor("float32", c.key, [1, numKvHeads, past, hd]);
        f[`past_value_${i}`] = new ort.Tensor("float32", c.value, [1, numKvHeads, past, hd]);
      });
      return f;
    });
    const out = await this.io.run(feeds, probs ? undefined : WITHOUT_PROBS);
    caches.forEach((c, i) => {
      c.set(out[`present_key_${i}`].data as Float32Array, out[`present_value_${i}`].data as Float32Array);
    });
    return {
      hidden: out.hidden_out.data as Float32Array,
      attentionProbs: probs ? (out.attn_probs.data as Float32Array) : undefined,
    };
  }

  /** Direct attention: the graph reads the slot buffers in place; the new tokens' keys and values are written after. */
  private async runDirect(
    hidden: Float32Array,
    positions: readonly number[],
    layerCaches: LayerKv[],
    probs: boolean,
    outputRows: number,
  ): Promise<SegmentResult> {
    const caches = ownCaches(layerCaches, SlotKvCache);
    const s = positions.length;
    const { hiddenSize, numKvHeads: kv, numHeads } = this.config;
    const hd = hiddenSize / numHeads;
    const groups = numHeads / kv;
    const past = caches[0].length;
    // every layer's buffers must have one capacity (the graph's C)
    const cap = Math.max(...caches.map((c) => c.capacity));
    for (const c of caches) if (c.capacity !== cap) c.resize(cap);
    // an empty cache (a prompt's first pass) is fed as buffers of no slots: the graph then spends
    // nothing on attention to spare slots (with C slots it would multiply every query by them all)
    const slots = past === 0 ? 0 : cap;
    const feeds = span("feeds", () => {
      // query row g*S + i sees new token j when j <= i
      const newMask = new Float32Array(groups * s * s);
      for (let g = 0; g < groups; g++)
        for (let i = 0; i < s; i++)
          newMask.fill(Number.NEGATIVE_INFINITY, (g * s + i) * s + i + 1, (g * s + i + 1) * s);
      const f: Record<string, ort.Tensor> = {
        hidden: new ort.Tensor("float32", hidden, [1, s, hiddenSize]),
        position_ids: new ort.Tensor("int64", BigInt64Array.from(positions.map(BigInt)), [1, s]),
        kv_mask: new ort.Tensor("float32", slots ? caches[0].mask() : NO_SLOTS, [slots]),
        new_mask: new ort.Tensor("float32", newMask, [groups * s, s]),
      };
      if (this.trailing) f.out_rows = new ort.Tensor("int64", BigInt64Array.of(BigInt(outputRows)), [1]);
      caches.forEach((c, i) => {
        f[`past_key_${i}`] = new ort.Tensor("float32", slots ? c.keyT : NO_SLOTS, [1, kv, hd, slots]);
        f[`past_value_${i}`] = new ort.Tensor("float32", slots ? c.value : NO_SLOTS, [1, kv, slots, hd]);
      });
      return f;
    });
    const out = await this.io.run(feeds, probs ? undefined : WITHOUT_PROBS);
    span("kv-write", () =>
      caches.forEach((c, i) => {
        c.append(out[`new_key_${i}`].data as Float32Array, out[`new_value_${i}`].data as Float32Array);
      }),
    );
    let attentionProbs: Float32Array | undefined;
    if (probs) {
      // [heads, S, slots + S] -> [heads, S, past + S]: drop the spare slots
      const full = out.attn_probs.data as Float32Array;
      const width = slots + s;
      const total = past + s;
      if (width === total) attentionProbs = full;
      else {
        attentionProbs = new Float32Array(numHeads * s * total);
        for (let r = 0; r < numHeads * s; r++) {
          attentionProbs.set(full.subarray(r * width, r * width + past), r * total);
          attentionProbs.set(full.subarray(r * width + slots, r * width + width), r * total + past);
        }
      }
    }
    return { hidden: out.hidden_out.data as Float32Array, attentionProbs };
  }

  /** Writes ONNX Runtime's profile (only for segments created with `profileFilePrefix`). */
  endProfiling(): void {
    this.io.endProfiling();
  }

  release(): Promise<void> {
    return this.io.release();
  }
}
