/**
 * Runs a batched decoder segment (layers [a, b), onnx/decoder.ts with `batched`) over every
 * sequence of a batch at once: one ONNX Runtime run per step, whatever the batch size.
 *
 * Each slot of the segment's `BatchKv` is one sequence with its own past length; a run gives
 * each slot its own new rows (any number, 0 included) at their own positions. The rows are
 * padded to the longest at the end: padded rows and a slot's stand-in row (when it has none) run
 * but are neither returned nor written to the cache, and the causal mask keeps every real row
 * from seeing them. So slot b's result is what the single-sequence segment gives for its rows
 * against its own cache (runtime/decoder-segment.ts), within float rounding.
 *
 * A run may feed a contiguous range of slots only (`from`): the others are neither read nor
 * written. `prefill` runs prompts into empty slots (sequences joining the batch) and can give
 * each one's attention probabilities in the layer the segment was built to output (TTP's and
 * FastV's scores); the empty past is then fed as buffers of no positions, so a prompt's run
 * spends nothing on the capacity its slot keeps for later.
 */
import { decoderSegmentBuilder, rowwiseAttention } from "../onnx/decoder.js";
import type { DecoderLayerWeights, TextConfig } from "../weights.js";
import { BatchKv } from "./batched-kv.js";
import { graphOptions, layerTensors, type SegmentOptions } from "./decoder-segment.js";
import { createGraphSession } from "./graph-cache.js";
import { ort } from "./session.js";
import { SessionIo, span } from "./tensor-io.js";

/** A slot's new rows in one run: their hidden states [n, H] and positions (n may be 0). */
export interface SlotRows {
  hidden: Float32Array;
  positions: readonly number[];
}

export interface PrefillResult {
  /** Each slot's output hidden states [n_b, H]. */
  hidden: Float32Array[];
  /** When asked: each slot's attention probabilities [heads, n_b, n_b] in the segment's probs layer. */
  attentionProbs?: Float32Array[];
}

const WITHOUT_PROBS: ReadonlySet<string> = new Set(["attn_probs"]);
/**
 * Row-wise attention (onnx/attention.ts): a run of at most this many rows a slot runs each row as
 * its own matrix-vector product over the caches (new_mask [S, 1, S]), a longer one all rows as one
 * matrix product (new_mask [1, S, S]). On the demo model's mid segment (`npm run bench -- segment
 * --against`, run by run), two rows each on its own took 0.93-0.94 of the time of one product at 8
 * and 16 sequences; three took 1.01-1.04, four 1.05-1.07 (the caches read once per row).
 */
export const ROWWISE_MAX_ROWS = 2;
const NO_SLOTS = new Float32Array(0);

export class BatchedSegment {
  private constructor(
    private readonly io: SessionIo,
    readonly config: TextConfig,
    readonly numLayers: number,
    /** The graph outputs attn_probs of one layer (BatchedSegment.create's attentionProbsLayer). */
    readonly hasAttentionProbs: boolean,
  ) {
    this.rowwise = rowwiseAttention(config);
  }

  /** The graph's attention is row-wise (onnx/decoder.ts's rowwiseAttention): its inputs take one more axis. */
  private readonly rowwise: boolean;

  /** `attentionProbsLayer`: index (within `layers`) whose attention probabilities `prefill` can give. */
  static async create(
    config: TextConfig,
    layers: DecoderLayerWeights[],
    opts: SegmentOptions & { name?: string; attentionProbsLayer?: number } = {},
  ): Promise<BatchedSegment> {
    const graph = { ...graphOptions(opts), attention: "direct" as const, batched: true };
    const probsLayer = opts.attentionProbsLayer;
    const session = await createGraphSession(
      {
        name: "batched-decoder",
        options: { config, ...graph, ...(probsLayer === undefined ? {} : { attentionProbsLayer: probsLayer }) },
        weights: layerTensors(layers),
        build: () => decoderSegmentBuilder({ config, layers, ...graph, attentionProbsLayer: probsLayer }),
      },
      opts,
    );
    return new BatchedSegment(
      new SessionIo(session, opts.name ?? "batched"),
      config,
      layers.length,
      probsLayer !== undefined,
    );
  }

  /** An empty cache for a batch of sequences through this segment. */
  newCache(opts: { capacity?: number; slots?: number } = {}): BatchKv {
    const { hiddenSize, numHeads, numKvHeads } = this.config;
    return new BatchKv(this.numLayers, numKvHeads, hiddenSize / numHeads, opts);
  }

  /**
   * One run over slots from..from+rows.length-1 of `cache` (without `from`: every slot; with it, a
   * range, which may leave slots after it out; rows[i] are slot from+i's): appends each slot's rows
   * to its cache and returns each slot's output hidden states [n, H].
   */
  async run(cache: BatchKv, rows: readonly SlotRows[], { from }: { from?: number } = {}): Promise<Float32Array[]> {
    if (from === undefined && rows.length !== cache.size)
      throw new RangeError(`${rows.length} row sets for ${cache.size} slots`);
    return (await this.exec(cache, rows, from ?? 0, false, false)).hidden;
  }

  /**
   * Prompts into empty slots from..from+rows.length-1 (sequences joining the batch), in one run;
   * with `attentionProbs` (a segment built with attentionProbsLayer) also each one's attention
   * probabilities in that layer, [heads, n, n] (the prompt's rows over themselves).
   */
  async prefill(
    cache: BatchKv,
    rows: readonly SlotRows[],
    { from, attentionProbs = false }: { from: number; attentionProbs?: boolean },
  ): Promise<PrefillResult> {
    if (attentionProbs && !this.hasAttentionProbs) throw new Error("this segment was built without attention output");
    for (let i = 0; i < rows.length; i++)
      if (cache.lengths[from + i] !== 0) throw new RangeError(`slot ${from + i} is not empty: prefill takes new slots`);
    return this.exec(cache, rows, from, true, attentionProbs);
  }

  private async exec(
    cache: BatchKv,
    rows: readonly SlotRows[],
    from: number,
    empty: boolean,
    probs: boolean,
  ): Promise<PrefillResult> {
    const B = rows.length;
    if (!(Number.isInteger(from) && from >= 0 && from + B <= cache.size))
      throw new RangeError(`${B} row sets from slot ${from} for ${cache.size} slots`);
    if (B === 0) return { hidden: [], attentionProbs: probs ? [] : undefined };
    const { hiddenSize: H, numHeads, numKvHeads: kv } = this.config;
    const hd = H / numHeads;
    const groups = numHeads / kv;
    const counts = rows.map((r) => r.positions.length);
    rows.forEach((r, b) => {
      if (r.hidden.length !== counts[b] * H)
        throw new RangeError(`slot ${from + b}: ${r.hidden.length} values for ${counts[b]} rows`);
    });
    const s = Math.max(1, ...counts);
    cache.reserve(Math.max(...counts.map((n, b) => cache.lengths[from + b] + n)));
    // empty slots (prompts) are fed as buffers of no positions
    const cap = empty ? 0 : cache.capacity;
    const feeds = span("feeds", () => {
      const hidden = new Float32Array(B * s * H);
      const positions = new BigInt64Array(B * s);
      rows.forEach((r, b) => {
        hidden.set(r.hidden, b * s * H);
        r.positions.forEach((p, t) => {
          positions[b * s + t] = BigInt(p);
        });
      });
      // query row g*S + i sees new row j when j <= i (so a real row never sees padding)
      const newMask = new Float32Array(groups * s * s);
      for (let g = 0; g < groups; g++)
        for (let i = 0; i < s; i++)
          newMask.fill(Number.NEGATIVE_INFINITY, (g * s + i) * s + i + 1, (g * s + i + 1) * s);
      // row-wise: a few rows each on its own ([S, 1, S]), many as one product ([1, S, S])
      const rowwise = this.rowwise;
      const grid = s <= ROWWISE_MAX_ROWS ? [s, 1, s] : [1, s, s];
      const f: Record<string, ort.Tensor> = {
        hidden: new ort.Tensor("float32", hidden, [B, s, H]),
        position_ids: new ort.Tensor("int64", positions, [B, s]),
        kv_mask: new ort.Tensor(
          "float32",
          empty ? NO_SLOTS : cache.mask(from, from + B),
          rowwise ? [B, 1, 1, 1, cap] : [B, 1, 1, cap],
        ),
        new_mask: new ort.Tensor("float32", newMask, rowwise ? grid : [groups * s, s]),
      };
      for (let l = 0; l < this.numLayers; l++) {
        const { keyT, value } = empty ? { keyT: NO_SLOTS, value: NO_SLOTS } : cache.inUse(l, from, from + B);
        f[`past_key_${l}`] = new ort.Tensor("float32", keyT, rowwise ? [B, kv, 1, hd, cap] : [B, kv, hd, cap]);
        f[`past_value_${l}`] = new ort.Tensor("float32", value, rowwise ? [B, kv, 1, cap, hd] : [B, kv, cap, hd]);
      }
      return f;
    });
    const out = await this.io.run(feeds, this.hasAttentionProbs && !probs ? WITHOUT_PROBS : undefined);
    span("kv-write", () => cache.append(counts, s, out.new_kv.data as Float32Array, from));
    const hiddenOut = out.hidden_out.data as Float32Array;
    const hidden = counts.map((n, b) => hiddenOut.slice(b * s * H, (b * s + n) * H));
    if (!probs) return { hidden };
    // [B, heads, s, s] (no past) -> each slot's [heads, n, n]
    const all = out.attn_probs.data as Float32Array;
    const attentionProbs = counts.map((n, b) => {
      const p = new Float32Array(numHeads * n * n);
      for (let h = 0; h < numHeads; h++)
        for (let i = 0; i < n; i++) {
          const src = ((b * numHeads + h) * s + i) * s;
          p.set(all.subarray(src, src + n), (h * n + i) * n);
        }
      return p;
    });
    return { hidden, attentionProbs };
  }

  release(): Promise<void> {
    return this.io.release();
  }
}
