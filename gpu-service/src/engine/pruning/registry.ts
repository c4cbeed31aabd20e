/**
 * The pruners by the names a mode's plan gives them (twig/modes.ts), and the one way a prefill
 * uses them: the R visual tokens that layers K+1..K_f keep are
 *
 *   kept = the indices i of the R largest s_i, ascending (ties: the lower index), s = PRUNERS[name].scores(x)
 *
 * With no pruning (base, ssd-only) R = N and every token is kept.
 */
import { topR } from "../decoding/ttp.js";
import { fastv } from "./fastv.js";
import type { PruneInput, Pruner } from "./pruner.js";
import { random } from "./random.js";
import { twig } from "./twig.js";
import { visionzip } from "./visionzip.js";

/** No pruning: every visual token scores the same, and with R = N all are kept. */
const none: Pruner = {
  scores: (x) => new Float64Array(x.prompt.numVisual).fill(1),
};

export const PRUNERS = { twig, fastv, random, visionzip, none } as const satisfies Record<string, Pruner>;

/** A pruner's name, as a mode's plan says it. */
export type Pruning = keyof typeof PRUNERS;

/** Whether the named pruner scores by an attention map (and so takes a scorer, `PruneInput.source`). */
export function scoresByAttention(pruning: Pruning): boolean {
  return PRUNERS[pruning].reads !== undefined;
}

/** The indices (0..N-1, ascending) of the R visual tokens that the named pruner keeps. */
export function keptVisualIndices(pruning: Pruning, x: PruneInput, r: number): number[] {
  return topR(PRUNERS[pruning].scores(x), r);
}
