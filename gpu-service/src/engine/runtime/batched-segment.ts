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
 */
import { decoderSegmentBuilder } from "../onnx/decoder.js";
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

export class BatchedSegment {
  private constructor(
    private readonly io: SessionIo,
    readonly config: TextConfig,
    readonly numLayers: number,
  ) {}

  static async create(
    config: TextConfig,
    layers: DecoderLayerWeights[],
    opts: SegmentOptions & { name?: string } = {},
  ): Promise<BatchedSegment> {
    const graph = { ...graphOptions(opts), attention: "direct" as const, batched: true };
    const session = await createGraphSession(
      {
        name: "batched-decoder",
        options: { config, ...graph },
        weights: layerTensors(layers),
        build: () => decoderSegmentBuilder({ config, layers, ...graph }),
      },
      opts,
    );
    return new BatchedSegment(new SessionIo(session, opts.name ?? "batched"), config, layers.length);
  }

  /** An empty cache for a batch of sequences through this segment. */
  newCache(opts: { capacity?: number; slots?: number } = {}): BatchKv {
    const { hiddenSize, numHeads, numKvHeads } = this.config;
    return new BatchKv(this.numLayers, numKvHeads, hiddenSize / numHeads, opts);
  }

  /**
   * One run over every slot of `cache` (rows[b] are slot b's): appends each slot's rows to its
   * cache and returns each slot's output hidden states [n_b, H].
   */
  async run(cache: BatchKv, rows: readonly SlotRows[]): Promise<Float32Array[]> {
    const B = cache.size;
    if (rows.length !== B) throw new RangeError(`${rows.length} row sets for ${B} slots`);
    if (B === 0) return [];
    const { hiddenSize: H, numHeads, numKvHeads: kv } = this.config;
    const hd = H / numHeads;
    const groups = numHeads / kv;
    const counts = rows.map((r) => r.positions.length);
    rows.forEach((r, b) => {
      if (r.hidden.length !== counts[b] * H)
        throw new RangeError(`slot ${b}: ${r.hidden.length} values for ${counts[b]} rows`);
    });
    const s = Math.max(1, ...counts);
    cache.reserve(Math.max(...counts.map((n, b) => cache.lengths[b] + n)));
    const cap = cache.capacity;
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
      const f: Record<string, ort.Tensor> = {
        hidden: new ort.Tensor("float32", hidden, [B, s, H]),
        position_ids: new ort.Tensor("int64", positions, [B, s]),
        kv_mask: new ort.Tensor("float32", cache.mask(), [B, 1, 1, cap]),
        new_mask: new ort.Tensor("float32", newMask, [groups * s, s]),
      };
      for (let l = 0; l < this.numLayers; l++) {
        const { keyT, value } = cache.inUse(l);
        f[`past_key_${l}`] = new ort.Tensor("float32", keyT, [B, kv, hd, cap]);
        f[`past_value_${l}`] = new ort.Tensor("float32", value, [B, kv, cap, hd]);
      }
      return f;
    });
    const out = await this.io.run(feeds);
    span("kv-write", () => {
      const keys = Array.from({ length: this.numLayers }, (_, l) => out[`new_key_${l}`].data as Float32Array);
      const values = Array.from({ length: this.numLayers }, (_, l) => out[`new_value_${l}`].data as Float32Array);
      cache.append(counts, s, keys, values);
    });
    const hiddenOut = out.hidden_out.data as Float32Array;
    return counts.map((n, b) => hiddenOut.slice(b * s * H, (b * s + n) * H));
  }

  release(): Promise<void> {
    return this.io.release();
  }
}
