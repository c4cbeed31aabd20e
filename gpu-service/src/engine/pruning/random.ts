/**
 * The random floor: R visual tokens kept at random, the same R for the same seed. Any pruner
 * worth its cost keeps more of the accuracy than this.
 *
 *   s_i ~ U[0, 1), i = 1..N, drawn in order from Rng(seed XOR 0x5eed)
 */
import { Rng } from "../decoding/sampling.js";
import type { Pruner } from "./pruner.js";

export const random: Pruner = {
  scores: (x) => {
    const rng = new Rng(x.seed ^ 0x5eed);
    return Array.from({ length: x.prompt.numVisual }, () => rng.next());
  },
};
