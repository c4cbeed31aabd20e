/**
 * SSD's draft path: the twig proposes up to n tokens, one at a time, that the full model then
 * verifies in one pass (decoding/speculative.ts). It reuses the KV of base layers 1..K and of the
 * twig, which hold every visual token.
 *
 * From h, the twig's hidden state for the newest token (at position t - 1), for j = 0, 1, ...:
 *   z_j = twig_head(twig_norm(h))                        the draft logits
 *   d_j = argmax z_j,       p_j = softmax(z_j)[d_j]      greedy (the paper)
 *   d_j ~ q_j = dist(z_j),  p_j = q_j[d_j]               sampling: q_j through the request's temperature and top-p
 *   x_j = layers_1..K(embed(d_j)) at position t + j      d_j's layer-K state, where its verification starts
 *   stop after d_j if d_j = EOS, or p_j < theta, or j + 1 = n        (d_j is still drafted)
 *   h   = twig(x_j) at position t + j
 * so layers 1..K have run on every draft and the twig on all but the last, which the caller's
 * rollback after verification accounts for.
 */
import type { Rng, SamplingOptions } from "../decoding/sampling.js";
import { proposeDraft } from "../decoding/speculative.js";
import type { DecoderSegment } from "../runtime/decoder-segment.js";
import type { LayerKv } from "../runtime/kv-cache.js";
import type { LlavaRuntime } from "../runtime/llava-runtime.js";
import { ort } from "../runtime/session.js";
import type { SessionIo } from "../runtime/tensor-io.js";
import { NO_ROWS, type Rows } from "./rows.js";

export interface Draft {
  /** d_0..d_{m-1}, m <= n. */
  tokens: number[];
  /** q_j: the twig's distribution each token was drawn from (through temperature and top-p); empty when greedy. */
  q: Float64Array[];
  /** x_j: the drafts' layer-K states at their positions, for the verification pass. */
  rows: Rows;
}

export interface DraftOptions {
  sampling: SamplingOptions;
  /** theta: drafting stops after a token whose draft probability is below it. */
  theta: number;
  rng: Rng;
}

export const NO_DRAFT: Draft = { tokens: [], q: [], rows: NO_ROWS };

/** Drafting never needs attention probabilities (only the prompt's are scored). */
const NO_PROBS = { attentionProbs: false };

export class Drafter {
  constructor(
    private readonly runtime: LlavaRuntime,
    private readonly lower: DecoderSegment,
    private readonly twig: DecoderSegment,
    private readonly head: SessionIo,
  ) {}

  /** z = twig_head(twig_norm(h)) for the last row of h: the draft logits. */
  async logits(hidden: Float32Array): Promise<Float32Array> {
    const H = this.runtime.textConfig.hiddenSize;
    const last = hidden.subarray(hidden.length - H);
    const out = await this.head.run({ hidden: new ort.Tensor("float32", last, [1, 1, H]) });
    return out.logits.data as Float32Array;
  }

  /**
   * Up to n drafts after the token at `position - 1`, whose twig state is `twigHidden`; appends them to
   * the caches of layers 1..K (all) and of the twig (all but the last).
   */
  async draft(
    caches: { lower: LayerKv[]; twig: LayerKv[] },
    twigHidden: Float32Array,
    position: number,
    n: number,
    o: DraftOptions,
  ): Promise<Draft> {
    const rt = this.runtime;
    const { hiddenSize: H, eosTokenId } = rt.textConfig;
    const tokens: number[] = [];
    const q: Float64Array[] = [];
    const hidden = new Float32Array(n * H);
    let h = twigHidden;
    for (let j = 0; j < n; j++) {
      const d = proposeDraft(await this.logits(h), o.sampling, o.rng);
      tokens.push(d.token);
      if (d.q) q.push(d.q);
      const x = (await this.lower.run(rt.embed([d.token]), [position + j], caches.lower, NO_PROBS)).hidden;
      hidden.set(x, j * H);
      if (d.token === eosTokenId || d.p < o.theta || j === n - 1) break;
      h = (await this.twig.run(x, [position + j], caches.twig, NO_PROBS)).hidden;
    }
    const positions = tokens.map((_, j) => position + j);
    return { tokens, q, rows: { hidden: hidden.subarray(0, tokens.length * H), positions } };
  }
}
