/**
 * Continuous batching: one loop advances every running sequence together, each step running
 * every segment once for the whole batch (runtime/batched-segment.ts), while each sequence
 * keeps what makes TwigVLM its own: its mode and budget (its kept visual tokens and FinalWipe
 * layout, so its own cache length in every segment), its own drafts and acceptance, its own
 * sampling, seed and stop.
 *
 * A round, for the batch as it stands (n_b = 0 drafts for sequences in non-drafting modes):
 *   extend  every sequence's newest token t_b (chosen, not yet in any cache) through lower;
 *           the drafters' twig takes it too (after their last accepted draft, when all were;
 *           in rounds that draft nothing the twig waits and catches up later);
 *   draft   in rounds that draft, each drafter proposes d_1..d_n_b (n_b <= min(cap, its own
 *           delta), the round's cap what has paid at this batch size: batch/draft-policy.ts), one batched lower run
 *           (and twig run) per draft position; a drafter stops at EOS or after a token whose
 *           draft probability is below theta, and the others go on without it;
 *   verify  ONE pass of mid, top and the head over every sequence's rows [t_b, d_1..d_n_b]:
 *           n_b+1 logit rows each;
 *   accept  per sequence the longest prefix its full model agrees with, plus its own next
 *           token (the bonus, the next t_b); each rolls its caches back on its own.
 * Sequences join between rounds, their prefills run together in batched runs of each segment
 * straight into their slots (batch/prefill.ts), at most `prefillRowsPerRound` prompt rows a
 * round. A prompt longer than that is prefilled over several rounds, its rows in chunks of
 * `prefillRowsPerRound` (whole where a pruner reads the run's attention: the twig's for TTP,
 * lower's for FastV), between two rounds the segment runs whose work (rows times layers) makes up
 * what a round's prefill may be, `prefillRowsPerRound` rows through every layer; its slots follow
 * the running ones' until it joins them, and the queue behind it waits. A sequence leaves at EOS,
 * max tokens, its callback's stop or its signal's abort, without holding the others.
 *
 * Memory (batch/kv-room.ts): sequences join, in arrival order, while at most `maxBatch` run and
 * the KV budget in bytes holds what they need now (their prompt rows and one round) besides what
 * the others need for their next round; the caches grow round by round. When a round would pass
 * the budget, the sequence that arrived last is preempted: its slots are freed and it waits at the
 * head of the queue with what it has generated, its sampler's state and its statistics;
 * readmitted, it is prefilled again with its prompt and those tokens, keeping the visual tokens it
 * kept (batch/prefill.ts), and goes on as if never stopped (greedy output the same, sampling
 * drawing on from the same random stream). A long prompt being prefilled when its joiner is the
 * latest arrival stops instead, its slots freed, and waits at the head of the queue to start
 * again. A sequence alone always runs, whatever it needs.
 *
 * A model without a twig batches the same way in its one mode, `base`: K = 0 and K_f = L, so there
 * is no lower segment, no twig and no top, and mid is every layer; a round is then extend and
 * verify of one row per sequence in one run, and the prefill one run of mid.
 */
import { chooseToken, Rng } from "../decoding/sampling.js";
import { proposeDraft, verifyGreedy, verifySampled } from "../decoding/speculative.js";
import type { BatchStats } from "../engine.js";
import { invariant } from "../errors.js";
import { PREFILL_ROWS_PER_ROUND } from "../options.js";
import type { BatchKv } from "../runtime/batched-kv.js";
import { BatchedSegment, type SlotRows } from "../runtime/batched-segment.js";
import { type LlavaRuntime, visualInputOf } from "../runtime/llava-runtime.js";
import { ort } from "../runtime/session.js";
import { phase, type SessionIo } from "../runtime/tensor-io.js";
import { coreStopwatch } from "../thread-time.js";
import { MODE_PLANS, usesTwig } from "../twig/modes.js";
import { concatFloats, concatRows } from "../twig/rows.js";
import { TwigDecoder, type TwigGenerateOptions, type TwigGenerateResult, type TwigStep } from "../twig/twig-decoder.js";
import { type DraftOutcome, DraftPolicy } from "./draft-policy.js";
import { KvRoom } from "./kv-room.js";
import { type Prefilled, type PreparedPrompt, prefillSteps, prefillTogether, preparePrompt } from "./prefill.js";

export interface BatchOptions {
  /** Most sequences decoded together. */
  maxBatch: number;
  /** KV memory the batch may hold, in bytes (every segment's slots). */
  kvBudgetBytes?: number;
  /**
   * For checks: each result also gives, per output token, the relative gap between the top two
   * logits of the full model's row that chose it ((l1 - l2) / |l1|): where a batched and a lone
   * run differ, a gap near 0 says the two were a float rounding apart.
   */
  recordMargins?: boolean;
  /**
   * Every round drafts at most this many tokens a drafter (0: none; Infinity: each its own delta),
   * instead of as many as have paid at the current batch size (batch/draft-policy.ts; the default).
   */
  draftCap?: number;
  /**
   * The prompt rows that joiners may bring into one round (default PREFILL_ROWS_PER_ROUND): more
   * prefill in a round shares its runs' fixed costs among more joiners; less keeps the running
   * ones stepping, and lets the first joiners of a burst start answering before the last are
   * prefilled. A prompt longer than this is prefilled over several rounds, in chunks of this many
   * rows (where no pruner reads the run's attention), between two rounds as much as this many rows
   * through every layer would take.
   */
  prefillRowsPerRound?: number;
}

/** twig-decoder's result, the margins when asked (BatchOptions.recordMargins), and the times it was preempted. */
export type BatchResult = TwigGenerateResult & { margins?: number[]; preemptions?: number };

export const DEFAULT_KV_BUDGET_BYTES = 2 * 1024 ** 3;

/** The batched segments: base layers [0, K), the twig, [K, K_f), [K_f, L) (a model without a twig: mid alone, every layer). */
interface Segments {
  lower: BatchedSegment | undefined;
  twig: BatchedSegment | undefined;
  mid: BatchedSegment;
  top: BatchedSegment | undefined;
}

/** The KV pools, in the order KvRoom's arrays give them (those the model has). */
const POOLS = ["lower", "twig", "mid", "top"] as const;

/** One running sequence. */
interface Sequence {
  o: TwigGenerateOptions;
  /** Arrival order (preemption takes the latest first). */
  arrival: number;
  /** Times it was preempted. */
  preemptions: number;
  speculative: boolean;
  delta: number;
  theta: number;
  limit: number;
  rng: Rng;
  /** Its newest token, chosen and emitted, not yet in any cache, and its position. */
  next: number;
  position: number;
  /** The twig's hidden state for `next` (drafters). */
  twigHidden?: Float32Array;
  /** Layer-K rows the twig has not run on yet: a last accepted draft, tokens of rounds without drafts. */
  catchUp?: SlotRows;
  outputIds: number[];
  margins?: number[];
  steps: TwigStep[];
  finishReason: TwigGenerateResult["finishReason"];
  done: boolean;
  pre: Prefilled;
  t0: number;
  prefillMs: number;
  resolve: (r: BatchResult) => void;
  reject: (err: unknown) => void;
}

interface Waiting {
  o: TwigGenerateOptions;
  arrival: number;
  t0: number;
  resolve: (r: BatchResult) => void;
  reject: (err: unknown) => void;
  /** A preempted sequence, to go on where it stopped. */
  preempted?: Sequence;
}

/**
 * A prompt longer than a round's prefill rows, being prefilled over several rounds: segment runs
 * (a chunk of its rows, or a whole stage whose attention a pruner reads) between rounds. Its slots
 * follow the running sequences' in every cache (the twig's: the drafters').
 */
interface Job {
  joining: Array<{ w: Waiting; p: PreparedPrompt }>;
  steps: AsyncGenerator<number, Prefilled[]>;
  /** What admission reserved for it (KvRoom): positions per slot and slots, per pool. */
  need: number[];
  slots: number[];
}

const NONE: SlotRows = { hidden: new Float32Array(0), positions: [] };
/** A round runs the running sequences' slots, the first ones (a long prompt's being prefilled follow). */
const RUNNING = { from: 0 };

export class BatchLoop {
  /** Every running sequence; slot b of lower, mid and top is running[b]. */
  private readonly running: Sequence[] = [];
  /** The drafters among them; slot b of the twig's cache is drafters[b]. */
  private readonly drafters: Sequence[] = [];
  private readonly waiting: Waiting[] = [];
  private readonly kv: {
    lower: BatchKv | undefined;
    twig: BatchKv | undefined;
    mid: BatchKv;
    top: BatchKv | undefined;
  };
  /** The caches' layout against the KV budget; pools in the order lower, twig, mid, top (those the model has). */
  private readonly room: KvRoom;
  private looping = false;
  private arrivals = 0;
  /** A long prompt's prefill in progress (at most one; admission waits for it). */
  private job: Job | undefined;
  /**
   * Long prompts whose prefill ran over several rounds, the rounds run while one was, and those
   * stopped before the end (the budget needed the room, the joiner was cancelled or a run failed)
   * (for tests).
   */
  longPrefills = 0;
  roundsDuringPrefill = 0;
  droppedPrefills = 0;
  /** Sequences preempted so far. */
  preemptions = 0;
  /** How many tokens a round drafts, from what rounds of each chain cap gave (draft-policy.ts). */
  private readonly policy = new DraftPolicy();
  /** The largest batch a round has run (for tests and metrics). */
  peakBatch = 0;
  /** The most sequences prefilled together (for tests). */
  peakJoiners = 0;
  /** Hears the loop's state after each admission and each round (metrics; kept out of the round itself). */
  onStats?: (stats: BatchStats) => void;

  private constructor(
    private readonly rt: LlavaRuntime,
    /** The twig's decoder (its split, its head, its plans' checks); absent for a model without a twig. */
    private readonly decoder: TwigDecoder | undefined,
    private readonly seg: Segments,
    readonly options: BatchOptions,
  ) {
    this.kv = {
      lower: seg.lower?.newCache(),
      twig: seg.twig?.newCache(),
      mid: seg.mid.newCache(),
      top: seg.top?.newCache(),
    };
    this.room = new KvRoom(this.pools, options.kvBudgetBytes ?? DEFAULT_KV_BUDGET_BYTES);
  }

  private get pools(): BatchKv[] {
    return this.pick(POOLS.map((p) => this.kv[p])) as BatchKv[];
  }

  /** Of four values in the pools' order (lower, twig, mid, top), those of the pools the model has. */
  private pick<T>(byPool: readonly T[]): T[] {
    return byPool.filter((_, i) => this.kv[POOLS[i]] !== undefined);
  }

  /**
   * Batched segments over the twig decoder's split (a batching engine's decoder has no segments of
   * its own: the weights are held once), or, given a model's runtime alone (a model without a
   * twig), one segment of every layer for its `base` mode.
   */
  static async create(from: TwigDecoder | LlavaRuntime, options: BatchOptions): Promise<BatchLoop> {
    const decoder = from instanceof TwigDecoder ? from : undefined;
    const rt = decoder ? decoder.runtime : (from as LlavaRuntime);
    const cfg = rt.textConfig;
    const layers = rt.weights.text.layers;
    const make = (ls: typeof layers, name: string, attentionProbsLayer?: number) =>
      BatchedSegment.create(cfg, ls, { ...rt.options, name, attentionProbsLayer });
    if (!decoder) {
      const mid = await make(layers, "batch-all");
      return new BatchLoop(rt, undefined, { lower: undefined, twig: undefined, mid, top: undefined }, options);
    }
    const { k, finalWipeLayer: kf } = decoder.twig;
    const [lower, twig, mid, top] = await Promise.all([
      // prefill scores by attention: FastV by base layer K's (lower's last), TTP by the twig's last layer's
      make(layers.slice(0, k), "batch-lower", k - 1),
      make(decoder.twig.layers, "batch-twig", decoder.twig.layers.length - 1),
      make(layers.slice(k, kf), "batch-mid"),
      kf < cfg.numLayers ? make(layers.slice(kf), "batch-top") : undefined,
    ]);
    return new BatchLoop(rt, decoder, { lower, twig, mid, top }, options);
  }

  /** Sequences running now. */
  get size(): number {
    return this.running.length;
  }

  /** Sequences whose long prompt is being prefilled now (0 or 1). */
  get prefilling(): number {
    return this.job?.joining.length ?? 0;
  }

  /** KV bytes the batch holds now. */
  get kvBytes(): number {
    return this.room.bytes;
  }

  stats(): BatchStats {
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      kvBytes: this.kvBytes,
      kvBudgetBytes: this.room.budget,
      preemptions: this.preemptions,
      prefilling: this.prefilling,
      longPrefills: this.longPrefills,
    };
  }

  /** Decodes one request in the batch; resolves as twig-decoder's `generate` does. */
  generate(o: TwigGenerateOptions): Promise<BatchResult> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ o, arrival: this.arrivals++, t0: performance.now(), resolve, reject });
      this.onStats?.(this.stats());
      void this.loop();
    });
  }

  private async loop(): Promise<void> {
    if (this.looping) return;
    this.looping = true;
    try {
      while (this.running.length > 0 || this.waiting.length > 0 || this.job) {
        await this.admit();
        if (this.job) await phase("prefill", () => this.advance());
        this.dropFinished();
        if (this.running.length > 0 || this.job) this.makeRoom();
        this.onStats?.(this.stats());
        if (this.running.length === 0) continue;
        this.peakBatch = Math.max(this.peakBatch, this.running.length);
        if (this.job) this.roundsDuringPrefill++;
        try {
          await phase("round", () => this.round());
        } catch (err) {
          for (const s of [...this.running]) this.leave(s, err);
        }
        this.dropFinished();
      }
      this.clear();
      this.onStats?.(this.stats());
    } finally {
      this.looping = false;
    }
  }

  /**
   * Seats waiting sequences, in order, while the batch and the KV budget have room, their prefills
   * run together (batch/prefill.ts), as many as keep a round's prefill within `prefillRowsPerRound`
   * prompt rows (at least one), so that the running ones keep stepping.
   */
  private async admit(): Promise<void> {
    for (const w of this.waiting.filter((x) => x.o.signal?.aborted)) {
      this.waiting.splice(this.waiting.indexOf(w), 1);
      w.reject(w.o.signal?.reason);
    }
    if (this.job) return; // a long prompt is being prefilled: the next ones wait their turn
    const joining: Array<{ w: Waiting; p: PreparedPrompt; need: number[] }> = [];
    const budget = this.options.prefillRowsPerRound ?? PREFILL_ROWS_PER_ROUND;
    let rows = 0;
    // room for the running ones' next round and every joiner's prompt and first round
    let need = this.roundNeed();
    let slots = this.pools.map(() => 0);
    while (this.waiting.length > 0 && this.running.length + joining.length < this.options.maxBatch) {
      const w = this.waiting[0];
      const own = this.joinerNeed(w);
      if (joining.length > 0 && rows + own.rows > budget) break;
      const needs = need.map((n, i) => Math.max(n, own.need[i]));
      const more = slots.map((n, i) => n + own.slots[i]);
      if (!this.room.fit(needs, more, this.running.length + joining.length === 0)) break;
      need = needs;
      slots = more;
      this.waiting.shift();
      const s = w.preempted;
      try {
        const resumed = s && { generated: s.outputIds.slice(0, -1), kept: s.pre.keptVisualIndices };
        const p = await phase("prefill", () =>
          preparePrompt(this.rt, this.decoder, { ...w.o, visual: visualInputOf(w.o) }, resumed),
        );
        joining.push({ w, p, need: own.need });
        rows += p.rows;
      } catch (err) {
        w.reject(err);
      }
    }
    if (joining.length === 0) return;
    this.peakJoiners = Math.max(this.peakJoiners, joining.length);
    if (rows > budget) {
      // one prompt longer than a round's prefill: over several rounds, a round's prefill work between two (advance)
      this.longPrefills++;
      this.job = {
        joining,
        steps: prefillSteps(
          this.rt,
          this.seg,
          this.kv,
          joining.map((j) => j.p),
          joining.map((j) => j.p.mode.speculative),
          { at: () => ({ slot: this.running.length, twigSlot: this.drafters.length }), chunkRows: budget },
        ),
        need: this.pools.map((_, i) => Math.max(0, ...joining.map((j) => j.need[i]))),
        slots,
      };
      return;
    }
    // joiners of like row counts above K side by side: the runs there pad less (prefill.ts)
    joining.sort((a, b) => a.p.midRows - b.p.midRows);
    let pre: Prefilled[];
    try {
      pre = await phase("prefill", () =>
        prefillTogether(
          this.rt,
          this.seg,
          this.kv,
          joining.map((j) => j.p),
          joining.map((j) => j.p.mode.speculative),
        ),
      );
    } catch (err) {
      for (const j of joining) j.w.reject(err);
      return;
    }
    this.seatAll(joining, pre);
  }

  /** Prefilled joiners take their places, in the joiners' order (as prefill.ts added their slots). */
  private seatAll(joining: ReadonlyArray<{ w: Waiting }>, pre: readonly Prefilled[]): void {
    joining.forEach((j, i) => {
      const s = j.w.preempted;
      if (!s) this.seat(j.w, pre[i]);
      else {
        // its next token is known (its newest): the prefill's logits are not used
        this.running.push(s);
        if (s.speculative) this.drafters.push(s);
      }
    });
  }

  /**
   * The long prompt's prefill, as far as a round's prefill goes: segment runs until their work
   * (rows times layers) reaches what `prefillRowsPerRound` rows through every layer of the model
   * would be; when it is done, the joiner takes its place. A joiner cancelled meanwhile, or a run
   * that fails, ends the job.
   */
  private async advance(): Promise<void> {
    const job = this.job as Job;
    if (job.joining.some((j) => j.w.o.signal?.aborted)) {
      this.dropJob(); // back to the queue, where admission rejects the cancelled one
      return;
    }
    const most = (this.options.prefillRowsPerRound ?? PREFILL_ROWS_PER_ROUND) * this.rt.textConfig.numLayers;
    for (let work = 0; work < most; ) {
      let step: IteratorResult<number, Prefilled[]>;
      try {
        step = await job.steps.next();
      } catch (err) {
        this.dropJob(err);
        return;
      }
      if (step.done) {
        this.job = undefined;
        this.seatAll(job.joining, step.value);
        return;
      }
      work += step.value;
    }
  }

  /**
   * Ends the long prompt's prefill: its slots are freed and its joiners wait again at the head of
   * the queue (the budget needs the room, or one was cancelled), or hear `err`.
   */
  private dropJob(err?: unknown): void {
    const job = this.job as Job;
    this.job = undefined;
    this.droppedPrefills++;
    void job.steps.return([]);
    for (const kv of [this.kv.lower, this.kv.mid, this.kv.top]) kv?.removeFrom(this.running.length);
    this.kv.twig?.removeFrom(this.drafters.length);
    if (err !== undefined) for (const j of job.joining) j.w.reject(err);
    else this.waiting.unshift(...job.joining.map((j) => j.w));
  }

  /**
   * Positions a joiner needs in each pool (lower, twig, mid, top) for its prompt rows (mid: text
   * and the kept visual tokens; top: text only, or everything when nothing is pruned), what it
   * generated before it was preempted, and one round; the slots it takes (the twig's also while it
   * scores, in a mode that prunes by the twig without drafting); and its prompt rows.
   */
  private joinerNeed(w: Waiting): { rows: number; need: number[]; slots: number[] } {
    const { plan } = w.o;
    const N = plan.visualTokens;
    const S = w.o.inputIds.length - 1 + N;
    const generated = w.preempted ? w.preempted.outputIds.length - 1 : 0;
    const round = 2 + (plan.draft?.length ?? 0);
    const twig = usesTwig(MODE_PLANS[plan.mode]);
    const lower = S + generated;
    const mid = (plan.retainBudget === null ? S : S - N + plan.keptVisualTokens) + generated;
    const top = (plan.retainBudget === null ? S : S - N) + generated;
    return {
      rows: lower,
      need: this.pick([lower + round, twig ? lower + round : 0, mid + round, top + round]),
      slots: this.pick([1, twig ? 1 : 0, 1, 1]),
    };
  }

  /** Positions each pool's longest slot may hold after the next round (the extend, up to delta drafts, the twig's catch-up). */
  private roundNeed(): number[] {
    const d = (s: Sequence) => 1 + (s.speculative ? Math.min(s.delta, s.limit - s.outputIds.length) : 0);
    const most = (kv: BatchKv | undefined, seqs: Sequence[], extra: (s: Sequence) => number) =>
      kv ? Math.max(0, ...seqs.map((s, b) => kv.lengths[b] + extra(s))) : 0;
    const need = [
      most(this.kv.lower, this.running, d),
      most(this.kv.twig, this.drafters, (s) => d(s) + (s.catchUp?.positions.length ?? 0)),
      most(this.kv.mid, this.running, d),
      most(this.kv.top, this.running, d),
    ];
    return this.pick(need);
  }

  /**
   * Before a round: while it would pass the KV budget (with what a long prompt's prefill reserved),
   * the sequence that arrived last waits again: a running one, or the prompt being prefilled
   * (alone, one always runs).
   */
  private makeRoom(): void {
    const none = this.pools.map(() => 0);
    const fits = (job: Job | undefined) => {
      if (!job) return this.room.fit(this.roundNeed(), none, this.running.length === 1);
      const need = this.roundNeed().map((n, i) => Math.max(n, job.need[i]));
      // the slots it reserved and has not taken yet (they follow the running ones')
      const held = this.pick([this.running.length, this.drafters.length, this.running.length, this.running.length]);
      const extra = this.pools.map((p, i) => Math.max(0, job.slots[i] - (p.size - held[i])));
      return this.room.fit(need, extra, this.running.length === 0);
    };
    while (!fits(this.job)) {
      const job = this.job;
      if (job && this.running.every((s) => job.joining.some((j) => j.w.arrival > s.arrival))) {
        this.dropJob();
        continue;
      }
      const last = this.running.reduce((a, s) => (s.arrival > a.arrival ? s : a));
      this.free(last);
      last.catchUp = undefined;
      last.twigHidden = undefined;
      const { o, arrival, t0, resolve, reject } = last;
      this.waiting.unshift({ o, arrival, t0, resolve, reject, preempted: last });
      last.preemptions++;
      this.preemptions++;
    }
  }

  /** A prefilled sequence, its slots filled (the last ones), joins the running; its first token is the prefill's. */
  private seat(w: Waiting, pre: Prefilled): void {
    const cfg = this.rt.textConfig;
    const plan = MODE_PLANS[w.o.plan.mode];
    const S = pre.promptTokens;
    const limit = Math.min(w.o.maxTokens, cfg.maxPositionEmbeddings - S);
    const delta = w.o.plan.draft?.length ?? 0;
    const rng = new Rng(w.o.seed ?? 0);
    w.o.onStarted?.({ promptTokens: S, visualTokens: pre.visualTokens, keptVisualIndices: pre.keptVisualIndices });
    const s: Sequence = {
      o: w.o,
      arrival: w.arrival,
      preemptions: 0,
      speculative: plan.speculative,
      delta,
      theta: w.o.plan.draft?.threshold ?? 1, // no drafts outside the SSD modes
      limit,
      rng,
      next: -1,
      position: S,
      outputIds: [],
      margins: this.options.recordMargins ? [] : undefined,
      steps: [],
      finishReason: "length",
      done: limit <= 0,
      pre,
      t0: w.t0,
      prefillMs: performance.now() - w.t0,
      resolve: w.resolve,
      reject: w.reject,
    };
    // its slots are the last of each cache (prefill.ts added them in the joiners' order)
    this.running.push(s);
    if (s.speculative) this.drafters.push(s);
    if (!s.done) {
      s.next = chooseToken(pre.logits, w.o.sampling, rng);
      s.margins?.push(margin(pre.logits));
      s.done = this.emit(s, [s.next], 0);
    }
  }

  /** One round for the whole batch: extend, draft, verify, accept. */
  private async round(): Promise<void> {
    const rt = this.rt;
    const { hiddenSize: H, eosTokenId } = rt.textConfig;
    const seqs = this.running;
    const B = seqs.length;
    // how many tokens each drafter may draft this round: what has paid at this batch size
    // (draft-policy.ts: none, a few, or its own delta), or the cap the options fix
    const fixed = this.options.draftCap;
    const rooms = this.drafters.map((s) => Math.min(s.delta, s.limit - s.outputIds.length));
    const chooses = rooms.some((r) => r > 0);
    const cap = !chooses ? 0 : (fixed ?? this.policy.cap(B, rooms));
    const room = (s: Sequence) => Math.min(s.delta, cap, s.limit - s.outputIds.length);
    // the policy learns from what this round cost: its time on its core, waits for the core left out
    const stopwatch = fixed === undefined && chooses ? coreStopwatch() : undefined;
    const emitted = seqs.reduce((a, s) => a + s.outputIds.length, 0);

    // extend: t_b through lower; the drafters' twig takes it (after what it has not seen yet),
    // unless no one drafts this round: then it catches up (one run of several rows) when drafting resumes
    // (without a twig K = 0: the embeddings go straight to mid)
    const embedded = rt.embed(seqs.map((s) => s.next));
    const tRows = seqs.map((s, b) => ({ hidden: embedded.subarray(b * H, (b + 1) * H), positions: [s.position] }));
    const hK =
      this.seg.lower && this.kv.lower
        ? await this.seg.lower.run(this.kv.lower, tRows, RUNNING)
        : tRows.map((r) => r.hidden);
    const index = new Map(seqs.map((s, b) => [s, b]));
    const drafting = cap > 0;
    // (drafters, and so drafting rounds, exist only on a model with a twig)
    const draftPath = this.drafters.length > 0 ? this.draftPath() : undefined;
    if (draftPath) {
      const twigIn = this.drafters.map((s) => {
        const own = { hidden: hK[index.get(s) as number], positions: [s.position] };
        return s.catchUp ? concatRows(s.catchUp, own, H) : own;
      });
      if (drafting) {
        const out = await draftPath.twig.run(draftPath.twigKv, twigIn, RUNNING);
        this.drafters.forEach((s, b) => {
          s.twigHidden = out[b].subarray(out[b].length - H);
          s.catchUp = undefined;
        });
      } else
        this.drafters.forEach((s, b) => {
          s.catchUp = twigIn[b];
        });
    }

    // draft: each drafter its own chain, one batched lower (and twig) run per draft position
    const drafts = seqs.map(() => ({ tokens: [] as number[], q: [] as Float64Array[], hidden: [] as Float32Array[] }));
    let active = drafting ? this.drafters.filter((s) => room(s) > 0) : [];
    for (let j = 0; draftPath && active.length > 0; j++) {
      const logits = await this.twigLogits(
        draftPath.head,
        active.map((s) => s.twigHidden as Float32Array),
      );
      const V = logits.length / active.length;
      const chosen = active.map((s, a) => {
        // d_j and p_j, the twig's confidence in it (checked against theta), by the single decoder's rule (twig/drafter.ts)
        const { token: d, p, q: qj } = proposeDraft(logits.subarray(a * V, (a + 1) * V), s.o.sampling, s.rng);
        const draft = drafts[index.get(s) as number];
        draft.tokens.push(d);
        if (qj) draft.q.push(qj);
        return { s, d, p };
      });
      const ids = rt.embed(chosen.map((c) => c.d));
      const byBatch = new Map(chosen.map((c, a) => [c.s, { c, a }]));
      const lowIn = seqs.map((s) => {
        const e = byBatch.get(s);
        if (!e) return NONE;
        return { hidden: ids.subarray(e.a * H, (e.a + 1) * H), positions: [s.position + 1 + j] };
      });
      const lowOut = await draftPath.lower.run(draftPath.lowerKv, lowIn, RUNNING);
      for (const { s } of chosen) drafts[index.get(s) as number].hidden.push(lowOut[index.get(s) as number]);
      const going = chosen.filter((c) => c.d !== eosTokenId && c.p >= c.s.theta && j < room(c.s) - 1).map((c) => c.s);
      if (going.length === 0) break;
      const goingSet = new Set(going);
      const twigOut = await draftPath.twig.run(
        draftPath.twigKv,
        this.drafters.map((s) =>
          goingSet.has(s) ? { hidden: lowOut[index.get(s) as number], positions: [s.position + 1 + j] } : NONE,
        ),
        RUNNING,
      );
      this.drafters.forEach((s, b) => {
        if (goingSet.has(s)) s.twigHidden = twigOut[b];
      });
      active = going;
    }

    // verify: one pass of mid, top and the head over [t_b, d_1..d_n_b] for every sequence
    const verifyIn = seqs.map((s, b) => {
      const d = drafts[b];
      const hidden = new Float32Array((1 + d.tokens.length) * H);
      hidden.set(hK[b], 0);
      d.hidden.forEach((h, i) => {
        hidden.set(h, (i + 1) * H);
      });
      return { hidden, positions: [s.position, ...d.tokens.map((_, i) => s.position + 1 + i)] };
    });
    let h = await this.seg.mid.run(this.kv.mid, verifyIn, RUNNING);
    const { top } = this.seg;
    if (top && this.kv.top) {
      const topKv = this.kv.top;
      const mid = h;
      h = await top.run(
        topKv,
        mid.map((x, b) => ({ hidden: x, positions: verifyIn[b].positions })),
        RUNNING,
      );
    }
    const logits = await rt.logits(concatFloats(h));
    const V = rt.textConfig.vocabSize;
    const twigKv = this.kv.twig;

    // accept: each sequence on its own, rolled back on its own
    const outcomes: DraftOutcome[] = [];
    let row = 0;
    seqs.forEach((s, b) => {
      const d = drafts[b];
      const n = d.tokens.length;
      const rowsOf = Array.from({ length: n + 1 }, (_, i) => logits.subarray((row + i) * V, (row + i + 1) * V));
      row += n + 1;
      if (s.done) return;
      const v =
        s.o.sampling.temperature > 0
          ? verifySampled(d.tokens, d.q, rowsOf, s.o.sampling, s.rng)
          : verifyGreedy(d.tokens, rowsOf);
      if (s.speculative) {
        s.steps.push({ drafted: d.tokens, accepted: v.accepted });
        outcomes.push({ room: room(s), drafted: n, accepted: v.accepted });
      }
      // lower, mid and top ran on every draft, the twig on all but the last
      for (const kv of [this.kv.lower, this.kv.mid, this.kv.top])
        if (kv) kv.truncate(b, kv.lengths[b] - n + v.accepted);
      if (twigKv && s.speculative && v.accepted < n) {
        const t = this.drafters.indexOf(s);
        twigKv.truncate(t, twigKv.lengths[t] - (n - 1) + v.accepted);
      }
      if (s.margins) for (let i = 0; i <= v.accepted; i++) s.margins.push(margin(rowsOf[i]));
      if (s.speculative && n > 0 && v.accepted === n)
        s.catchUp = { hidden: d.hidden[n - 1], positions: [s.position + n] };
      s.done = this.emit(s, [...d.tokens.slice(0, v.accepted), v.bonus], v.accepted);
      s.next = v.bonus;
      s.position += v.accepted + 1;
    });
    if (stopwatch)
      this.policy.record(B, cap, seqs.reduce((a, s) => a + s.outputIds.length, 0) - emitted, stopwatch(), outcomes);
  }

  /** The segments and caches SSD drafts through (there are drafters only on a model with a twig). */
  private draftPath() {
    const { lower, twig } = this.seg;
    const { lower: lowerKv, twig: twigKv } = this.kv;
    invariant(lower && twig && lowerKv && twigKv && this.decoder, "drafting needs a twig");
    return { lower, twig, lowerKv, twigKv, head: this.decoder.twigHead };
  }

  /** Twig norm + twig head on rows [n, H] → logits [n, V]. */
  private async twigLogits(head: SessionIo, rows: Float32Array[]): Promise<Float32Array> {
    const H = this.rt.textConfig.hiddenSize;
    const out = await head.run({ hidden: new ort.Tensor("float32", concatFloats(rows), [1, rows.length, H]) });
    return out.logits.data as Float32Array;
  }

  /** Appends verified tokens to a sequence's output; true when it is over (EOS, max tokens or the callback). */
  private emit(s: Sequence, ids: number[], acceptedDraft: number): boolean {
    const eosId = this.rt.textConfig.eosTokenId;
    let out = ids.slice(0, s.limit - s.outputIds.length);
    const eos = out.indexOf(eosId);
    if (eos >= 0) {
      out = out.slice(0, eos);
      s.finishReason = "stop";
    }
    s.outputIds.push(...out);
    if (out.length > 0 && s.o.onTokens?.(out, Math.min(acceptedDraft, out.length)) === false) {
      s.finishReason = "callback";
      return true;
    }
    return s.finishReason === "stop" || s.outputIds.length >= s.limit;
  }

  /** Sequences that are done leave the batch (their slots are freed), and their callers hear. */
  private dropFinished(): void {
    let left = false;
    for (const s of [...this.running]) {
      if (s.o.signal?.aborted && !s.done) {
        s.done = true;
        s.reject(s.o.signal.reason);
      }
      if (s.done) {
        this.leave(s);
        left = true;
      }
    }
    // the caches' capacity follows the longest sequence left (every run reads all of it)
    if (left) for (const kv of [this.kv.lower, this.kv.twig, this.kv.mid, this.kv.top]) kv?.fit();
  }

  private leave(s: Sequence, err?: unknown): void {
    if (!this.free(s)) return;
    s.done = true;
    if (err !== undefined) s.reject(err);
    else if (!s.o.signal?.aborted) s.resolve(this.result(s));
  }

  /** A sequence gives its slots back (false: it held none). */
  private free(s: Sequence): boolean {
    const b = this.running.indexOf(s);
    if (b < 0) return false;
    // a long prompt's slots, when one is being prefilled, follow the running ones' and stay after them
    for (const kv of [this.kv.lower, this.kv.mid, this.kv.top]) kv?.remove(b, this.running.length);
    this.running[b] = this.running[this.running.length - 1];
    this.running.pop();
    const t = this.drafters.indexOf(s);
    if (t >= 0) {
      this.kv.twig?.remove(t, this.drafters.length);
      this.drafters[t] = this.drafters[this.drafters.length - 1];
      this.drafters.pop();
    }
    return true;
  }

  private result(s: Sequence): BatchResult {
    const { pre } = s;
    const prefillMs = s.prefillMs;
    return {
      outputIds: s.outputIds,
      margins: s.margins?.slice(0, s.outputIds.length),
      preemptions: s.preemptions,
      finishReason: s.finishReason,
      promptTokens: pre.promptTokens,
      visualTokens: pre.visualTokens,
      keptVisualIndices: pre.keptVisualIndices,
      r: pre.r,
      retainBudget: pre.retainBudget,
      scoreSource: pre.scoreSource,
      prefillMs,
      decodeMs: performance.now() - s.t0 - prefillMs,
      steps: s.steps,
      layout: s.limit > 0 ? pre.layout : { ...pre.layout, mid: 0, top: 0 },
    };
  }

  /** With no sequence left, the caches give their memory back. */
  private clear(): void {
    for (const kv of [this.kv.lower, this.kv.twig, this.kv.mid, this.kv.top]) kv?.clear();
  }

  async release(): Promise<void> {
    const { lower, twig, mid, top } = this.seg;
    await Promise.all([lower?.release(), twig?.release(), mid.release(), top?.release()]);
  }
}

/** (l1 - l2) / |l1| for the two largest logits of a row. */
function margin(row: ArrayLike<number>): number {
  let a = Number.NEGATIVE_INFINITY;
  let b = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < row.length; i++) {
    const x = row[i];
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) b = x;
  }
  return (a - b) / Math.max(Math.abs(a), 1e-30);
}
