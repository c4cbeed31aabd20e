/**
 * TwigVLM decoding over a LlavaRuntime and a twig: every mode of the engine.
 *
 * The base model of L layers is cut where TTP's three KV layouts meet:
 *   lower = base layers 1..K, and the twig     every token, all N visual ones
 *   mid   = base layers K+1..K_f               the text and the R kept visual tokens
 *   top   = base layers K_f+1..L               the text only (FinalWipe)
 * with R from the budget R-bar, the mean visual tokens per layer (decoding/budget.ts):
 *   R-bar = (N*K + R*(K_f - K)) / L   =>   R = ceil((L*R-bar - N*K) / (K_f - K)).
 * Kept tokens keep their original positions; later tokens continue from the unpruned length S.
 *
 * Prefill runs the prompt through lower (and the twig, when the mode uses it), and the mode's
 * pruner (pruning/) picks the R visual tokens that mid keeps (TTP: the R that the last prompt
 * token attends to most in the twig's last layer). The prompt's pass through the layers above K
 * is not a step of its own: it is the first full-path pass of decoding, which in SSD modes also
 * verifies the first drafts (as the released code does).
 *
 * Then every round is the same, with n = 0 drafts in the plain modes:
 *   draft     the twig proposes d_1..d_n, n <= delta (drafter.ts), stopping after EOS or after a
 *             token whose draft probability is below theta;
 *   verify    ONE pass of the full path (mid, top, head) over the pending rows (the prompt, or
 *             the last token) and the drafts, whose layer-K states were computed while drafting:
 *             n+1 logit rows z_0..z_n, z_i the full model's prediction for d_{i+1}'s place;
 *   accept    greedy: the a drafts of the longest prefix with d_{i+1} = argmax z_i, plus the
 *             bonus argmax z_a, the full model's own token (sampling: decoding/speculative.ts);
 *   roll back lower, mid and top ran on all n drafts and keep a; the twig ran on d_1..d_{n-1}
 *             and keeps min(a, n-1);
 *   extend    the bonus goes through lower: the next pending row; the twig takes it too (after
 *             d_n when all n were accepted), giving the state the next draft starts from.
 * Each round emits a + 1 tokens; greedy, they are exactly the full model's own (SSD is lossless).
 * The statistics (timings, drafts and acceptances) go to an observer (decode-record.ts).
 */

import { type BudgetShape, defaultRetainBudget, keptTokensForBudget } from "../decoding/budget.js";
import { Rng, type SamplingOptions } from "../decoding/sampling.js";
import { type Verdict, verifyGreedy, verifySampled } from "../decoding/speculative.js";
import type { ScoreSource } from "../decoding/ttp.js";
import type { EngineInfo } from "../engine.js";
import { invariant } from "../errors.js";
import type { AccelerationPlan } from "../plan.js";
import { type AccelerationAsk, checkAcceleration, planAcceleration } from "../plan-request.js";
import { keptVisualIndices, PRUNERS, scoresByAttention } from "../pruning/registry.js";
import { DecoderSegment } from "../runtime/decoder-segment.js";
import type { LayerKv } from "../runtime/kv-cache.js";
import { createHeadSession, type LlavaRuntime, visualInputOf } from "../runtime/llava-runtime.js";
import { SessionIo } from "../runtime/tensor-io.js";
import type { VisualInput } from "../runtime/visual-encoder.js";
import type { TwigWeights } from "../weights.js";
import { DecodeRecord, type DecodeStep } from "./decode-record.js";
import { Drafter, NO_DRAFT } from "./drafter.js";
import { MODE_PLANS, usesTwig } from "./modes.js";
import { concatRows, lastRows, NO_ROWS, type Rows, selectRows } from "./rows.js";

export interface TwigGenerateOptions {
  inputIds: number[];
  /** One square view (LLaVA-1.5), unless `visual` is given (AnyRes views, video frames). */
  pixelValues?: Float32Array;
  visual?: VisualInput;
  /** The mode and its choices, resolved for this request's N (plan-request.ts): taken as they are. */
  plan: AccelerationPlan;
  maxTokens: number;
  sampling: SamplingOptions;
  seed?: number;
  /** Called with each verified batch of tokens (and how many came from accepted drafts); false stops. */
  onTokens?: (ids: number[], acceptedDraft: number) => boolean | undefined;
  onStarted?: (info: { promptTokens: number; visualTokens: number; keptVisualIndices: number[] }) => void;
  signal?: AbortSignal;
}

/** A verification: the drafted tokens and how many of them the full model accepted (decode-record.ts). */
export type TwigStep = DecodeStep;

export interface TwigGenerateResult {
  outputIds: number[];
  finishReason: "stop" | "length" | "callback";
  promptTokens: number;
  visualTokens: number;
  keptVisualIndices: number[];
  /** R: visual tokens kept in layers K+1..K_f (N when the mode does not prune). */
  r: number;
  /** The R-bar budget applied, or null when the mode does not prune. */
  retainBudget: number | null;
  /** The scorer applied to attention (TTP's, FastV's), or null when the mode scores no visual token by attention. */
  scoreSource: ScoreSource | null;
  /** Time until the prompt had been through every layer (in SSD modes that pass also verified the first drafts). */
  prefillMs: number;
  decodeMs: number;
  steps: TwigStep[];
  /** Prompt rows each KV layout holds: lower (and twig, when it ran) all, mid text + R, top text only. */
  layout: { lower: number; twig: number; mid: number; top: number };
}

/** The segments of one model split at K and K_f, and the twig (public for benchmarks). */
export interface TwigParts {
  lower: DecoderSegment;
  twig: DecoderSegment;
  mid: DecoderSegment;
  top: DecoderSegment | undefined;
}

interface Caches {
  lower: LayerKv[];
  twig: LayerKv[];
  mid: LayerKv[];
  top: LayerKv[];
}

/** Decoding steps never need attention probabilities (only the prompt's are scored). */
const NO_PROBS = { attentionProbs: false };

export class TwigDecoder {
  /** Its own segments and SSD's draft path over them (drafter.ts); none when made for the batch loop alone. */
  private readonly serial?: { parts: TwigParts; drafter: Drafter };

  private constructor(
    readonly runtime: LlavaRuntime,
    readonly twig: TwigWeights,
    /** The twig's norm and LM head (also the batch loop's: batch/batch-loop.ts). */
    readonly twigHead: SessionIo,
    parts?: TwigParts,
  ) {
    if (parts) this.serial = { parts, drafter: new Drafter(runtime, parts.lower, parts.twig, twigHead) };
  }

  /**
   * Builds the twig's head and, unless `segments` is false, the segments this decoder runs a request
   * on (lower, mid, top and the twig). A batching engine passes false: its batch loop builds batched
   * segments of its own, and a second copy of every decoder weight would only take memory.
   */
  static async create(
    runtime: LlavaRuntime,
    twig: TwigWeights,
    { segments = true }: { segments?: boolean } = {},
  ): Promise<TwigDecoder> {
    const L = runtime.textConfig.numLayers;
    const { k, finalWipeLayer: kf } = twig;
    if (!(k >= 1 && kf > k && kf <= L)) throw new RangeError(`twig split K=${k}, K_f=${kf} does not fit ${L} layers`);
    const config = runtime.textConfig;
    // the runtime's precision, like the LM head
    const head = new SessionIo(await createHeadSession(config, twig.norm, twig.lmHead, runtime.options), "twig-head");
    if (!segments) return new TwigDecoder(runtime, twig, head);
    const [lower, mid, top, twigLayers] = await Promise.all([
      runtime.segment(0, k, k - 1, "lower"),
      // the segment that ends the model computes, in its last layer, only the rows the head reads
      runtime.segment(k, kf, undefined, "mid", { outputRows: kf === L }),
      kf < L ? runtime.segment(kf, L, undefined, "top", { outputRows: true }) : Promise.resolve(undefined),
      DecoderSegment.create(config, twig.layers, {
        ...runtime.options,
        attentionProbsLayer: twig.layers.length - 1,
        name: "twig",
      }),
    ]);
    return new TwigDecoder(runtime, twig, head, { lower, twig: twigLayers, mid, top });
  }

  /** Its segments (public for benchmarks and tests). */
  get parts(): TwigParts {
    return this.own().parts;
  }

  /** SSD's draft path (drafter.ts) over the lower segment, the twig and its head. */
  get drafter(): Drafter {
    return this.own().drafter;
  }

  private own(): { parts: TwigParts; drafter: Drafter } {
    if (!this.serial)
      throw new Error(
        "this twig decoder was made without segments of its own (for a batch loop): it runs no request itself",
      );
    return this.serial;
  }

  /** The budget used when a request names none (see `defaultRetainBudget` in budget.ts), for a picture of the most visual tokens. */
  get defaultRetainBudget(): number {
    return this.defaultRetainBudgetFor(this.runtime.numVisualTokens);
  }

  /** The budget used when a request with N visual tokens names none. */
  defaultRetainBudgetFor(visualTokens: number): number {
    return defaultRetainBudget(this.budgetShape(visualTokens), this.twig.defaultPrunedFraction);
  }

  /** The scorer used when a request names none: the twig's own (its config's ttp_score_source), else the released code's. */
  get defaultScoreSource(): ScoreSource {
    return this.twig.scoreSource ?? "last-token";
  }

  /** What planning needs of the twig (EngineInfo's `twig`). */
  get info(): NonNullable<EngineInfo["twig"]> {
    const { k, t, finalWipeLayer } = this.twig;
    return {
      k,
      t,
      finalWipeLayer,
      defaultRetainBudget: this.defaultRetainBudget,
      defaultScoreSource: this.defaultScoreSource,
      defaultPrunedFraction: this.twig.defaultPrunedFraction,
    };
  }

  /**
   * The plan of `ask` for a request of N visual tokens (the model's N by default), made by the same
   * planning as the service's: for the benchmarks, the parity checks and the tests that drive a decoder.
   */
  plan(ask: AccelerationAsk, visualTokens = this.runtime.numVisualTokens): AccelerationPlan {
    const cfg = this.runtime.textConfig;
    const info: EngineInfo = {
      name: "the model",
      visualTokens: this.runtime.numVisualTokens,
      numLayers: cfg.numLayers,
      contextLength: cfg.maxPositionEmbeddings,
      visualTokensVary:
        this.runtime.weights.config.anyres !== undefined || this.runtime.weights.config.video !== undefined,
      twig: this.info,
    };
    checkAcceleration(ask, info);
    return planAcceleration(ask, info, visualTokens);
  }

  /** The shape the R-bar formula needs, for a request with N visual tokens. */
  budgetShape(visualTokens: number): BudgetShape {
    const { k, finalWipeLayer } = this.twig;
    return {
      visualTokens,
      numLayers: this.runtime.textConfig.numLayers,
      k,
      finalWipeLayer,
    };
  }

  /** Empty caches for every segment, with room for `capacity` positions (a request's whole length) where the layout has slots. */
  newCaches(capacity?: number): Caches {
    const p = this.parts;
    return {
      lower: p.lower.newCaches(capacity),
      twig: p.twig.newCaches(capacity),
      mid: p.mid.newCaches(capacity),
      top: p.top?.newCaches(capacity) ?? [],
    };
  }

  /**
   * What a plan promised for a prompt, asserted (planning checked each, plan-request.ts): made for its N, with
   * text after the image when the mode prunes, R following from R-bar (the formula asserts the budget's
   * range), and a budget, a scorer and drafts exactly where the mode uses them.
   */
  assertPlan(p: AccelerationPlan, prompt: { positions: number[]; visualStart: number; numVisual: number }): void {
    const mode = MODE_PLANS[p.mode];
    const N = prompt.numVisual;
    const last = prompt.positions.length - 1;
    invariant(N === p.visualTokens, `the plan is for ${p.visualTokens} visual tokens, the prompt holds ${N}`);
    invariant(
      mode.pruning === "none" || last >= prompt.visualStart + N,
      `mode ${p.mode} prunes visual tokens, so the prompt must go on after the image`,
    );
    invariant(
      (p.retainBudget === null) === (mode.pruning === "none"),
      `mode ${p.mode} planned with R-bar ${p.retainBudget}`,
    );
    invariant(
      (p.scoreSource === null) === !scoresByAttention(mode.pruning),
      `mode ${p.mode} planned with scorer ${p.scoreSource}`,
    );
    invariant((p.draft === null) === !mode.speculative, `mode ${p.mode} planned with drafts ${p.draft}`);
    const r = p.retainBudget === null ? N : keptTokensForBudget(p.retainBudget, this.budgetShape(N));
    invariant(
      p.keptVisualTokens === r,
      `R = ${p.keptVisualTokens} does not follow from R-bar ${p.retainBudget} and N = ${N}`,
    );
  }

  async generate(o: TwigGenerateOptions): Promise<TwigGenerateResult> {
    const rt = this.runtime;
    const cfg = rt.textConfig;
    const H = cfg.hiddenSize;
    const { mode, retainBudget } = o.plan;
    const plan = MODE_PLANS[mode];
    const record = new DecodeRecord(performance.now(), plan.speculative);
    const visual = visualInputOf(o);
    const image = await rt.encodeVisual(visual);
    const prompt = rt.embedPrompt(o.inputIds, image.features, rt.placeholderOf(visual));
    const { visualStart, numVisual: N } = prompt;
    const S = prompt.positions.length;
    const isVisual = (p: number) => p >= visualStart && p < visualStart + N;
    this.assertPlan(o.plan, prompt);
    const delta = o.plan.draft?.length ?? 0;
    const limit = Math.min(o.maxTokens, cfg.maxPositionEmbeddings - S);
    // room for the whole request up front (prompt, answer, one round's drafts): no decoding step allocates KV
    const caches = this.newCaches(S + limit + delta + 1);

    // prefill: the lower layers (and the twig) see every token
    // (attention probabilities are copied out only where the mode's pruner reads them)
    const reads = PRUNERS[plan.pruning].reads;
    const low = await this.parts.lower.run(prompt.hidden, prompt.positions, caches.lower, {
      attentionProbs: reads === "lower",
    });
    const tw = usesTwig(plan)
      ? await this.parts.twig.run(low.hidden, prompt.positions, caches.twig, { attentionProbs: reads === "twig" })
      : undefined;

    // the visual tokens layers K+1..K_f keep (TTP or a baseline: the plan's R of N); after K_f none
    const r = o.plan.keptVisualTokens;
    const source = o.plan.scoreSource;
    const kept = keptVisualIndices(
      plan.pruning,
      { prompt, lower: low, twig: tw, image, heads: cfg.numHeads, source, seed: o.seed ?? 0 },
      r,
    );
    const keptPositions = new Set(kept.map((v) => v + visualStart));
    const dropped = (p: number) => isVisual(p) && !keptPositions.has(p);
    const wiped = retainBudget === null ? () => false : isVisual;
    o.onStarted?.({ promptTokens: S, visualTokens: N, keptVisualIndices: kept });

    // decoding: the prompt's rows above K are the first pending rows
    const midRows = prompt.positions.filter((p) => !dropped(p));
    let pending: Rows = {
      hidden: midRows.length === S ? low.hidden : selectRows(low.hidden, midRows, H),
      positions: midRows,
    };
    let twigHidden = tw?.hidden;
    let position = S;
    const rng = new Rng(o.seed ?? 0);
    const theta = o.plan.draft?.threshold ?? 1; // no drafts outside the SSD modes
    const outputIds: number[] = [];
    let finishReason: TwigGenerateResult["finishReason"] = "length";

    /** Appends verified tokens to the output; true when generation is over (EOS, max tokens or the callback). */
    const emit = (ids: number[], acceptedDraft: number): boolean => {
      let out = ids.slice(0, limit - outputIds.length);
      const eos = out.indexOf(cfg.eosTokenId);
      if (eos >= 0) {
        out = out.slice(0, eos);
        finishReason = "stop";
      }
      outputIds.push(...out);
      if (out.length > 0 && o.onTokens?.(out, Math.min(acceptedDraft, out.length)) === false) {
        finishReason = "callback";
        return true;
      }
      return finishReason === "stop" || outputIds.length >= limit;
    };

    const drafting = { sampling: o.sampling, theta, rng };
    while (limit > 0) {
      o.signal?.throwIfAborted();
      // draft (SSD modes): up to delta tokens from the twig, never past the token limit
      const room = limit - outputIds.length;
      const draft = plan.speculative
        ? await this.drafter.draft(caches, twigHidden as Float32Array, position, Math.min(delta, room), drafting)
        : NO_DRAFT;
      const n = draft.tokens.length;
      // verify: one pass of the full path over the pending rows and the drafts → n+1 logit rows
      const logits = await this.fullPath(caches, concatRows(pending, draft.rows, H), wiped, n + 1);
      record.passed();
      // accept the longest prefix the full model agrees with, plus its own next token (n = 0: just that token)
      const v: Verdict =
        o.sampling.temperature > 0
          ? verifySampled(draft.tokens, draft.q, logits, o.sampling, rng)
          : verifyGreedy(draft.tokens, logits);
      record.verified(draft.tokens, v.accepted);
      // roll back: lower, mid and top ran on every draft, the twig on all but the last
      for (const c of [...caches.lower, ...caches.mid, ...caches.top]) c.truncate(c.length - n + v.accepted);
      if (v.accepted < n) for (const c of caches.twig) c.truncate(c.length - (n - 1) + v.accepted);

      if (emit([...draft.tokens.slice(0, v.accepted), v.bonus], v.accepted)) break;
      position += v.accepted + 1;
      // extend: the bonus token through lower is the next pending row; the twig catches up (with d_n if accepted)
      const bonusHidden = (await this.parts.lower.run(rt.embed([v.bonus]), [position - 1], caches.lower, NO_PROBS))
        .hidden;
      pending = { hidden: bonusHidden, positions: [position - 1] };
      if (plan.speculative) {
        const x = concatRows(v.accepted === n ? lastRows(draft.rows, 1, H) : NO_ROWS, pending, H);
        twigHidden = (await this.parts.twig.run(x.hidden, x.positions, caches.twig, NO_PROBS)).hidden;
      }
    }

    // lower and the layers above K now hold the same generated tokens: what remains is the prompt's rows
    const generated = caches.lower[0].length - S;
    const layout = {
      lower: S,
      twig: tw ? S : 0,
      mid: limit > 0 ? caches.mid[0].length - generated : 0,
      top: limit > 0 ? (caches.top[0]?.length ?? generated) - generated : 0,
    };
    return {
      outputIds,
      finishReason,
      promptTokens: S,
      visualTokens: N,
      keptVisualIndices: kept,
      r,
      retainBudget,
      scoreSource: source,
      ...record.stats(),
      layout,
    };
  }

  /** The full path above K: mid over the rows, top over those not wiped, head on the last `count` rows. */
  private async fullPath(
    caches: Caches,
    x: Rows,
    wiped: (position: number) => boolean,
    count: number,
  ): Promise<Float32Array[]> {
    const rt = this.runtime;
    const { hiddenSize: H, vocabSize: V } = rt.textConfig;
    // the last segment returns only the `count` rows the head reads
    const top = this.parts.top;
    let h = (await this.parts.mid.run(x.hidden, x.positions, caches.mid, top ? {} : { outputRows: count })).hidden;
    if (top) {
      const keep = x.positions.flatMap((p, i) => (wiped(p) ? [] : [i]));
      const rows = keep.length === x.positions.length ? h : selectRows(h, keep, H);
      const positions = keep.map((i) => x.positions[i]);
      h = (await top.run(rows, positions, caches.top, { outputRows: count })).hidden;
    }
    const logits = await rt.logits(h.subarray(h.length - count * H));
    return Array.from({ length: count }, (_, i) => logits.subarray(i * V, (i + 1) * V));
  }

  async release(): Promise<void> {
    const p = this.serial?.parts;
    await Promise.all([
      p?.lower.release(),
      p?.twig.release(),
      p?.mid.release(),
      p?.top?.release(),
      this.twigHead.release(),
    ]);
  }
}
