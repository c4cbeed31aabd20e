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
 */

import { invariant } from "../errors.js";
import type { AccelerationPlan } from "../plan.js";
import { keptVisualIndices, PRUNERS } from "../pruning/registry.js";
import type { BatchKv } from "../runtime/batched-kv.js";
import type { BatchedSegment, SlotRows } from "../runtime/batched-segment.js";
import type { EmbeddedPrompt, LlavaRuntime } from "../runtime/llava-runtime.js";
import type { EncodedVisual, VisualInput } from "../runtime/visual-encoder.js";
import { MODE_PLANS, type ModePlan, usesTwig } from "../twig/modes.js";
import { selectRows } from "../twig/rows.js";
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
  const cfg = rt.textConfig;
  const H = cfg.hiddenSize;
  const k = joiners.length;
  const caches = [kv.lower, kv.mid, kv.top].filter((c) => c !== undefined);
  const first = kv.mid.size;
  const twigFirst = kv.twig?.size ?? 0;
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
  try {
    // lower: every prompt row; attention probabilities of layer K when a FastV joiner scores by them
    // (without a twig K = 0: the embeddings are layer K's input)
    const rowsIn = joiners.map((j) => ({ hidden: j.prompt.hidden, positions: j.prompt.positions }));
    const reads = (where: "lower" | "twig") => joiners.some((j) => PRUNERS[j.mode.pruning].reads === where);
    let low: { hidden: Float32Array[]; attentionProbs?: Float32Array[] } = { hidden: rowsIn.map((r) => r.hidden) };
    if (seg.lower && lowerKv) {
      for (const j of joiners) lowerKv.add(j.rows);
      low = await seg.lower.prefill(lowerKv, rowsIn, { from: first, attentionProbs: reads("lower") });
    }
    // the twig, for the joiners whose mode runs it: its last layer's attention for TTP's scores
    let tw: { attentionProbs?: Float32Array[] } | undefined;
    if (twigUsers.length > 0) {
      invariant(seg.twig && twigKv, "a model without a twig runs base mode only");
      for (const i of twigUsers) twigKv.add(joiners[i].rows);
      tw = await seg.twig.prefill(
        twigKv,
        twigUsers.map((i) => ({ hidden: low.hidden[i], positions: joiners[i].prompt.positions })),
        { from: twigFirst, attentionProbs: reads("twig") },
      );
      for (let t = twigUsers.length - 1; t >= 0; t--) if (!drafts[twigUsers[t]]) twigKv.remove(twigFirst + t);
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
    const midOut = await prefillInRuns(
      seg.mid,
      kv.mid,
      first,
      above.map((a, i) => ({ hidden: selectRows(low.hidden[i], a.midRows, H), positions: a.midRows })),
    );
    let out = midOut;
    const { top } = seg;
    if (top && kv.top) {
      out = await prefillInRuns(
        top,
        kv.top,
        first,
        above.map((a, i) => {
          const at = new Map(a.midRows.map((p, r) => [p, r]));
          const idx = a.topRows.map((p) => at.get(p) as number);
          return { hidden: selectRows(midOut[i], idx, H), positions: a.topRows };
        }),
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
  } catch (err) {
    // the new slots are the last ones: removing them from the end moves nothing
    for (const c of caches) while (c.size > first) c.remove(c.size - 1);
    while (twigKv && twigKv.size > twigFirst) twigKv.remove(twigKv.size - 1);
    throw err;
  }
}

/**
 * Prompts into slots from..from+rows.length-1, in as few runs as keep padding low: a run pads
 * every slot to its longest, so slots whose row counts differ much (a mode that prunes beside one
 * that does not) go in runs of their own. Consecutive slots only: a run feeds a range.
 */
async function prefillInRuns(
  seg: BatchedSegment,
  cache: BatchKv,
  from: number,
  rows: readonly SlotRows[],
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const [a, b] of runsOf(rows.map((r) => r.positions.length)))
    out.push(...(await seg.prefill(cache, rows.slice(a, b), { from: from + a })).hidden);
  return out;
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
