/**
 * A sequence's prefill, run alone before it joins the batch: the prompt through every segment of
 * the twig decoder (lower and, when the mode uses it, the twig see every visual token; the mode's
 * scores pick the R that mid keeps; top sees none), and the full model's logits for the first
 * answer token. The caches it leaves are the sequence's own, in the single-sequence layout;
 * the batch copies them into its slots (batch/batch-loop.ts).
 *
 * This is the prefill of twig/twig-decoder.ts's `generate` without its first drafts: there the
 * prompt's pass above K also verifies drafts, here the first token comes from the prompt's own
 * pass and drafting starts at the next round. Greedy output is the same (SSD is lossless).
 */
import type { AccelerationPlan } from "../plan.js";
import { keptVisualIndices, PRUNERS } from "../pruning/registry.js";
import type { LayerKv } from "../runtime/kv-cache.js";
import type { VisualInput } from "../runtime/visual-encoder.js";
import { MODE_PLANS, usesTwig } from "../twig/modes.js";
import type { TwigDecoder, TwigGenerateResult } from "../twig/twig-decoder.js";

export interface PrefillRequest {
  inputIds: number[];
  visual: VisualInput;
  /** The request's plan (plan-request.ts), taken as it is. */
  plan: AccelerationPlan;
  seed?: number;
}

/** What the prompt gave: its lengths, the kept visual tokens and the budget (as the decoder's result says them), and: */
export interface Prefilled
  extends Pick<
    TwigGenerateResult,
    "promptTokens" | "visualTokens" | "keptVisualIndices" | "r" | "retainBudget" | "scoreSource"
  > {
  /** Each segment's caches after the prompt (twig: empty when the mode does not run it). */
  caches: { lower: LayerKv[]; twig: LayerKv[]; mid: LayerKv[]; top: LayerKv[] };
  /** The full model's logits for the first answer token. */
  logits: Float32Array;
}

export async function prefill(decoder: TwigDecoder, o: PrefillRequest): Promise<Prefilled> {
  const rt = decoder.runtime;
  const cfg = rt.textConfig;
  const H = cfg.hiddenSize;
  const parts = decoder.parts;
  const plan = MODE_PLANS[o.plan.mode];
  const image = await rt.encodeVisual(o.visual);
  const prompt = rt.embedPrompt(o.inputIds, image.features, rt.placeholderOf(o.visual));
  const { visualStart, numVisual: N } = prompt;
  const S = prompt.positions.length;
  const isVisual = (p: number) => p >= visualStart && p < visualStart + N;
  decoder.assertPlan(o.plan, prompt);
  const caches = decoder.newCaches(S);
  const reads = PRUNERS[plan.pruning].reads;
  const low = await parts.lower.run(prompt.hidden, prompt.positions, caches.lower, {
    attentionProbs: reads === "lower",
  });
  const tw = usesTwig(plan)
    ? await parts.twig.run(low.hidden, prompt.positions, caches.twig, { attentionProbs: reads === "twig" })
    : undefined;
  const { retainBudget, keptVisualTokens: r, scoreSource: source } = o.plan;
  const kept = keptVisualIndices(
    plan.pruning,
    { prompt, lower: low, twig: tw, image, heads: cfg.numHeads, source, seed: o.seed ?? 0 },
    r,
  );
  const keptPositions = new Set(kept.map((v) => v + visualStart));
  // mid: the text and the kept visual tokens; top: the text only (FinalWipe), or everything when nothing is pruned
  const midRows = prompt.positions.filter((p) => !isVisual(p) || keptPositions.has(p));
  const topRows = retainBudget === null ? midRows : midRows.filter((p) => !isVisual(p));
  let h = (await parts.mid.run(rows(low.hidden, midRows, H), midRows, caches.mid)).hidden;
  if (parts.top) {
    const at = new Map(midRows.map((p, i) => [p, i]));
    h = (
      await parts.top.run(
        rows(
          h,
          topRows.map((p) => at.get(p) as number),
          H,
        ),
        topRows,
        caches.top,
      )
    ).hidden;
  }
  return {
    promptTokens: S,
    visualTokens: N,
    keptVisualIndices: kept,
    r,
    retainBudget,
    scoreSource: source,
    caches,
    logits: await rt.lastLogits(h),
  };
}

/** Rows `idx` of a row-major [S, H] matrix. */
function rows(h: Float32Array, idx: readonly number[], H: number): Float32Array {
  const out = new Float32Array(idx.length * H);
  idx.forEach((r, j) => {
    out.set(h.subarray(r * H, (r + 1) * H), j * H);
  });
  return out;
}
