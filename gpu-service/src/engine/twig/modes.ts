/**
 * What each decoding mode does, in two independent choices:
 *  - pruning: whose scores pick the R visual tokens that layers K+1..K_f keep
 *    (after K_f none, FinalWipe): the twig's last-layer attention (TTP), base
 *    layer K's attention (FastV), a seeded draw (random floor), the vision
 *    tower's CLS attention in its feature layer (VisionZip), or no pruning
 *    (the pruners, one file each: pruning/);
 *  - speculative: whether the twig drafts and the full model verifies (SSD).
 *
 * | mode      | pruning   | speculative |
 * |-----------|-----------|-------------|
 * | base      | none      | no          |
 * | ssd-only  | none      | yes         |
 * | twig      | twig      | yes         |
 * | ttp-only  | twig      | no          |
 * | fastv     | fastv     | no          |
 * | random    | random    | no          |
 * | visionzip | visionzip | no          |
 */
import type { Mode } from "../plan.js";
import type { Pruning } from "../pruning/registry.js";

export interface ModePlan {
  pruning: Pruning;
  speculative: boolean;
}

/** Each mode's plan; the keys are the proto's names (the type takes every one, and no other). */
export const MODE_PLANS: Record<Mode, ModePlan> = {
  base: { pruning: "none", speculative: false },
  "ssd-only": { pruning: "none", speculative: true },
  twig: { pruning: "twig", speculative: true },
  "ttp-only": { pruning: "twig", speculative: false },
  fastv: { pruning: "fastv", speculative: false },
  random: { pruning: "random", speculative: false },
  visionzip: { pruning: "visionzip", speculative: false },
};

/** Every mode, in the order the tools list them: those that keep every visual token, then the pruning ones. */
export const MODES = Object.keys(MODE_PLANS) as Mode[];

/** The modes that prune visual tokens (the evaluation runs them at each budget). */
export const PRUNING_MODES: readonly Mode[] = MODES.filter((m) => MODE_PLANS[m].pruning !== "none");

/** Whether the mode runs the twig at all (to score the visual tokens, or to draft). */
export function usesTwig(plan: ModePlan): boolean {
  return plan.pruning === "twig" || plan.speculative;
}
