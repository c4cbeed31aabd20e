/**
 * The prefill of sequences joining the batch, all of them together: their prompts go through
 * each batched segment in one run (lower, then the twig for those whose mode runs it, then mid,
 * then top), straight into the new slots they keep for their lives (batch/batch-loop.ts), and
 * the LM head gives each its first answer token's logits in one run.
 *
 * Each keeps what makes TwigVLM its own: between the twig and mid, the scores of its own mode pick
 * its own R kept visual tokens (TTP: its twig's last-layer attention over the visual tokens from
 * the last prompt token, or from all text tokens; FastV: base layer K's), from the attention
 * probabilities the twig's (or lower's) run gives per sequence. mid then holds its text and its
 * kept tokens, top (FinalWipe) its text only. Joiners with very different row counts above K (a
 * mode that prunes beside one that does not) are put in separate runs there, so no one pads to
 * the longest.
 *
 * A sequence the batch preempted (batch/batch-loop.ts) is prefilled again the same way, its
 * prompt followed by the tokens it had generated (all but its newest, which no cache holds yet),
 * with the visual tokens it kept the first time (its scores are not taken again): its caches are
 * then what they were, within float rounding.
 *
 * This is the prefill of twig/twig-decoder.ts's `generate` without its first drafts: there the
 * prompt's pass above K also verifies drafts, here the first token comes from the prompt's own
 * pass and drafting starts at the next round. Greedy output is the same (SSD is lossless), within
 * the float rounding that separates a batched run from a lone one.
 *
 * A model without a twig has mid alone, every layer (K = 0; `base` mode only): a joiner's prompt
 * goes through it in one run, nothing pruned.
 *
 * A prompt longer than a round's prefill rows goes as steps (`prefillSteps`), one segment run each,
 * for the batch loop to decode between: lower, mid and top take its rows in chunks, each chunk
 * attending to what the earlier ones wrote to its slot (the same attention within float
 * rounding); a run whose attention probabilities a pruner reads (the twig's for TTP, lower's for
 * FastV) takes every row at once (its inputs, lower's chunked output for the twig, are within
 * float rounding of the unchunked ones, as are the scores).
 */

import { invariant } from "../errors.js";
import type { AccelerationPlan } from "../plan.js";
import { keptVisualIndices, PRUNERS } from "../pruning/registry.js";
import type { BatchKv } from "../runtime/batched-kv.js";
import type { BatchedSegment, SlotRows } from "../runtime/batched-segment.js";
import type { EmbeddedPrompt, LlavaRuntime } from "../runtime/llava-runtime.js";
import type { EncodedVisual, VisualInput } from "../runtime/visual-encoder.js";
import { MODE_PLANS, type ModePlan, usesTwig } from "../twig/modes.js";
import { concatFloats, selectRows } from "../twig/rows.js";
import type { TwigDecoder, TwigGenerateResult } from "../twig/twig-decoder.js";

export interface PrefillRequest {
  inputIds: number[];
  visual: VisualInput;
  /** The request's plan (plan-request.ts), taken as it is. */
  plan: AccelerationPlan;
  seed?: number;
}

/** A joiner's prompt, ready for the batched runs: its visual tokens and embedded rows. */
export interface PreparedPrompt {
  request: PrefillRequest;
  mode: ModePlan;
  image: EncodedVisual;
  prompt: EmbeddedPrompt;
  /** Prompt rows S. */
  rows: number;
  /** Rows mid takes: the text and the R kept visual tokens (all S when the mode does not prune). */
  midRows: number;
  /** The visual tokens to keep, when already chosen (a preempted sequence's). */
  kept?: number[];
}

/** What a preempted sequence brings back: the tokens it generated (all but its newest) and the visual tokens it kept. */
export interface Resumed {
  generated: readonly number[];
  kept: number[];
}

/** What the prompt gave: its lengths, the kept visual tokens and the budget (as the decoder's result says them), and: */
export interface Prefilled
  extends Pick<
    TwigGenerateResult,
    "promptTokens" | "visualTokens" | "keptVisualIndices" | "r" | "retainBudget" | "scoreSource"
  > {
  /** Prompt rows each segment's slot holds: lower (and the twig, when it ran) all, mid text + R, top text only. */
  layout: TwigGenerateResult["layout"];
  /** The full model's logits for the first answer token. */
  logits: Float32Array;
}

/** The batched segments and the batch's caches of them (without a twig: mid alone, every layer). */
export interface BatchSegments {
  lower: BatchedSegment | undefined;
  twig: BatchedSegment | undefined;
  mid: BatchedSegment;
  top: BatchedSegment | undefined;
}
export interface BatchCaches {
  lower: BatchKv | undefined;
  twig: BatchKv | undefined;
  mid: BatchKv;
  top: BatchKv | undefined;
}

/**
 * A joiner's visual tokens and embedded prompt, its plan checked against them (a bad request fails
 * here, alone); a preempted sequence's prompt is followed by the tokens it generated.
 */
export async function preparePrompt(
  rt: LlavaRuntime,
  /** The twig's decoder, which checks a plan of any mode; absent (a model without a twig): `base` only. */
  decoder: TwigDecoder | undefined,
  request: PrefillRequest,
  resumed?: Resumed,
): Promise<PreparedPrompt> {
  const image = await rt.encodeVisual(request.visual);
  let prompt = rt.embedPrompt(request.inputIds, image.features, rt.placeholderOf(request.visual));
  if (decoder) decoder.assertPlan(request.plan, prompt);
  else {
    const p = request.plan;
    invariant(p.mode === "base", `mode ${p.mode} needs a twig and this model has none`);
    invariant(
      p.visualTokens === prompt.numVisual && p.retainBudget === null && p.draft === null,
      `a base plan for ${prompt.numVisual} visual tokens, not ${JSON.stringify(p)}`,
    );
  }
  const mode = MODE_PLANS[request.plan.mode];
  const S = prompt.positions.length;
  const m = resumed?.generated.length ?? 0;
  if (resumed && m > 0) {
    const hidden = new Float32Array(prompt.hidden.length + m * rt.textConfig.hiddenSize);
    hidden.set(prompt.hidden);
    hidden.set(rt.embed(resumed.generated), prompt.hidden.length);
    prompt = { ...prompt, hidden, positions: [...prompt.positions, ...resumed.generated.map((_, i) => S + i)] };
  }
  const midRows = (request.plan.retainBudget === null ? S : S - prompt.numVisual + request.plan.keptVisualTokens) + m;
  return { request, mode, image, prompt, rows: S + m, midRows, kept: resumed?.kept };
}

/**
 * Prefills `joiners` into new slots at the end of each cache: lower, mid and top one each, the
 * twig one for each joiner with `drafts[j]` (its slot kept for drafting; other twig users borrow
 * one for the run and give it back). The slots are added in the joiners' order; the caches grow
 * their capacity as their slots fill (runtime/batched-kv.ts). On an error the new slots are
 * removed again.
 */
export async function prefillTogether(
  rt: LlavaRuntime,
  seg: BatchSegments,
  kv: BatchCaches,
  joiners: readonly PreparedPrompt[],
  drafts: readonly boolean[],
): Promise<Prefilled[]> {
  const first = kv.mid.size;
  const twigFirst = kv.twig?.size ?? 0;
  try {
    const steps = prefillSteps(rt, seg, kv, joiners, drafts, { at: () => ({ slot: first, twigSlot: twigFirst }) });
    for (;;) {
      const step = await steps.next();
      if (step.done) return step.value;
    }
  } catch (err) {
    // the new slots are the last ones
    for (const c of [kv.lower, kv.mid, kv.top]) c?.removeFrom(first);
    kv.twig?.removeFrom(twigFirst);
    throw err;
  }
}

export interface PrefillStepOptions {
  /**
   * Where the joiners' slots start now in lower, mid and top (`slot`) and in the twig (`twigSlot`):
   * in a batch that runs rounds between the steps, sequences before them may leave and move them.
   */
  at: () => { slot: number; twigSlot: number };
  /**
   * Prompt rows a run of lower, mid or top takes of each joiner (default: all): a longer prompt
   * goes through in chunks, each against the cache its earlier chunks filled. A run whose
   * attention probabilities a pruner reads (the twig's for TTP, lower's for FastV) takes every
   * row at once.
   */
  chunkRows?: number;
}

/**
 * The prefill as steps, one segment run each (batch/batch-loop.ts runs rounds between the steps
 * of a long prompt's prefill): yields after every run its work, prompt rows times the segment's
 * layers; returns what `prefillTogether` returns.
 * A step's slots are added to the caches as its stage begins; the caller removes them if it stops
 * early or a step throws.
 */
export async function* prefillSteps(
  rt: LlavaRuntime,
  seg: BatchSegments,
  kv: BatchCaches,
  joiners: readonly PreparedPrompt[],
  drafts: readonly boolean[],
  { at, chunkRows = Number.POSITIVE_INFINITY }: PrefillStepOptions,
): AsyncGenerator<number, Prefilled[]> {
  const cfg = rt.textConfig;
  const H = cfg.hiddenSize;
  const k = joiners.length;
  // the twig's users: drafters first (their slots stay), then the others (slots borrowed for the run)
  const twigUsers = [
    ...joiners.flatMap((_, i) => (drafts[i] ? [i] : [])),
    ...joiners.flatMap((j, i) => (!drafts[i] && usesTwig(j.mode) ? [i] : [])),
  ];
  const { lower: lowerKv, twig: twigKv } = kv;
  invariant(
    (seg.lower && lowerKv) || joiners.every((j) => j.mode.pruning === "none" && !usesTwig(j.mode)),
    "a model without a twig runs base mode only",
  );
  // lower: every prompt row; attention probabilities of layer K when a FastV joiner scores by them
  // (without a twig K = 0: the embeddings are layer K's input)
  const rowsIn = joiners.map((j) => ({ hidden: j.prompt.hidden, positions: j.prompt.positions }));
  const reads = (where: "lower" | "twig") => joiners.some((j) => PRUNERS[j.mode.pruning].reads === where);
  let low: { hidden: Float32Array[]; attentionProbs?: Float32Array[] } = { hidden: rowsIn.map((r) => r.hidden) };
  if (seg.lower && lowerKv) {
    for (const j of joiners) lowerKv.add(j.rows);
    if (reads("lower")) {
      low = await seg.lower.prefill(lowerKv, rowsIn, { from: at().slot, attentionProbs: true });
      yield workOf(seg.lower, rowsIn);
    } else low = { hidden: yield* inChunks(seg.lower, lowerKv, () => at().slot, rowsIn, chunkRows, H) };
  }
  // the twig, for the joiners whose mode runs it: its last layer's attention for TTP's scores
  let tw: { attentionProbs?: Float32Array[] } | undefined;
  if (twigUsers.length > 0) {
    invariant(seg.twig && twigKv, "a model without a twig runs base mode only");
    const twigFirst = at().twigSlot;
    for (const i of twigUsers) twigKv.add(joiners[i].rows);
    const twigIn = twigUsers.map((i) => ({ hidden: low.hidden[i], positions: joiners[i].prompt.positions }));
    tw = await seg.twig.prefill(twigKv, twigIn, { from: twigFirst, attentionProbs: reads("twig") });
    for (let t = twigUsers.length - 1; t >= 0; t--) if (!drafts[twigUsers[t]]) twigKv.remove(twigFirst + t);
    yield workOf(seg.twig, twigIn);
  }
  const twigProbs = new Map(twigUsers.map((i, t) => [i, tw?.attentionProbs?.[t]]));

  // each joiner's own kept visual tokens: mid takes its text and them, top its text only
  const above = joiners.map((j, i) => {
    const { prompt, request } = j;
    const { visualStart, numVisual: N } = prompt;
    const { retainBudget, keptVisualTokens: r, scoreSource: source } = request.plan;
    const kept =
      j.kept ??
      keptVisualIndices(
        j.mode.pruning,
        {
          prompt,
          lower: { attentionProbs: low.attentionProbs?.[i] },
          twig: { attentionProbs: twigProbs.get(i) },
          image: j.image,
          heads: cfg.numHeads,
          source,
          seed: request.seed ?? 0,
        },
        r,
      );
    const keptPositions = new Set(kept.map((v) => v + visualStart));
    const isVisual = (p: number) => p >= visualStart && p < visualStart + N;
    const midRows = prompt.positions.filter((p) => !isVisual(p) || keptPositions.has(p));
    const topRows = retainBudget === null ? midRows : midRows.filter((p) => !isVisual(p));
    return { kept, midRows, topRows };
  });
  for (const a of above) {
    kv.mid.add(a.midRows.length);
    kv.top?.add(a.topRows.length);
  }
  const midOut = yield* prefillInRuns(
    seg.mid,
    kv.mid,
    () => at().slot,
    above.map((a, i) => ({ hidden: selectRows(low.hidden[i], a.midRows, H), positions: a.midRows })),
    chunkRows,
    H,
  );
  let out = midOut;
  const { top } = seg;
  if (top && kv.top) {
    out = yield* prefillInRuns(
      top,
      kv.top,
      () => at().slot,
      above.map((a, i) => {
        const at = new Map(a.midRows.map((p, r) => [p, r]));
        const idx = a.topRows.map((p) => at.get(p) as number);
        return { hidden: selectRows(midOut[i], idx, H), positions: a.topRows };
      }),
      chunkRows,
      H,
    );
  }
  // the head on each joiner's last row
  const last = new Float32Array(k * H);
  out.forEach((h, i) => {
    last.set(h.subarray(h.length - H), i * H);
  });
  const logits = await rt.logits(last);
  const V = cfg.vocabSize;
  return joiners.map((j, i) => ({
    promptTokens: j.rows,
    visualTokens: j.prompt.numVisual,
    keptVisualIndices: above[i].kept,
    r: j.request.plan.keptVisualTokens,
    retainBudget: j.request.plan.retainBudget,
    scoreSource: j.request.plan.scoreSource,
    layout: {
      lower: lowerKv ? j.rows : 0,
      twig: usesTwig(j.mode) ? j.rows : 0,
      mid: above[i].midRows.length,
      top: kv.top ? above[i].topRows.length : 0,
    },
    logits: logits.slice(i * V, (i + 1) * V),
  }));
}

/**
 * Prompts into the consecutive slots starting at from(), in as few runs as keep padding low: a run
 * pads every slot to its longest, so slots whose row counts differ much (a mode that prunes beside
 * one that does not) go in runs of their own. Each run in chunks (`inChunks`).
 */
async function* prefillInRuns(
  seg: BatchedSegment,
  cache: BatchKv,
  from: () => number,
  rows: readonly SlotRows[],
  chunkRows: number,
  H: number,
): AsyncGenerator<number, Float32Array[]> {
  const out: Float32Array[] = [];
  for (const [a, b] of runsOf(rows.map((r) => r.positions.length)))
    out.push(...(yield* inChunks(seg, cache, () => from() + a, rows.slice(a, b), chunkRows, H)));
  return out;
}

/** A run's work, for the batch loop's share of prefill between two rounds: prompt rows times layers. */
function workOf(seg: BatchedSegment, rows: readonly { positions: readonly number[] }[]): number {
  return seg.numLayers * rows.reduce((a, r) => a + r.positions.length, 0);
}

/**
 * Prompts into empty consecutive slots starting at from(), `chunkRows` rows of each at a time
 * (all of them in one run when they are no more): the first chunk as a prefill (no past), the next
 * ones each against what the earlier filled (the same attention within float rounding). Yields
 * each run's work; returns each slot's output rows.
 */
async function* inChunks(
  seg: BatchedSegment,
  cache: BatchKv,
  from: () => number,
  rows: readonly SlotRows[],
  chunkRows: number,
  H: number,
): AsyncGenerator<number, Float32Array[]> {
  const longest = Math.max(0, ...rows.map((r) => r.positions.length));
  const pieces: Float32Array[][] = rows.map(() => []);
  let a = 0;
  do {
    const chunk = rows.map((r) => {
      const n = Math.max(0, Math.min(chunkRows, r.positions.length - a));
      return { hidden: r.hidden.subarray(a * H, (a + n) * H), positions: r.positions.slice(a, a + n) };
    });
    const out =
      a === 0
        ? (await seg.prefill(cache, chunk, { from: from() })).hidden
        : await seg.run(cache, chunk, { from: from() });
    out.forEach((h, i) => {
      pieces[i].push(h);
    });
    yield workOf(seg, chunk);
    a += chunkRows;
  } while (a < longest);
  return pieces.map((p) => (p.length === 1 ? p[0] : concatFloats(p)));
}

/**
 * Ranges [a, b) of consecutive slots, each one run: a slot joins the run before it unless that
 * would pad the run to more than twice its real rows.
 */
export function runsOf(counts: readonly number[]): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let a = 0;
  let real = 0;
  let longest = 0;
  counts.forEach((n, b) => {
    const padded = Math.max(longest, n) * (b - a + 1);
    if (b > a && padded > 2 * (real + n)) {
      runs.push([a, b]);
      a = b;
      real = 0;
      longest = 0;
    }
    real += n;
    longest = Math.max(longest, n);
  });
  if (counts.length > a) runs.push([a, counts.length]);
  return runs;
}
