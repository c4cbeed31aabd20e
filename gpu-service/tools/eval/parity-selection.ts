/**
 * The visual tokens the engine keeps against the ones PyTorch keeps. The fixture
 * holds, for TTP (the twig's last layer) and FastV (base layer K) under each
 * scorer, PyTorch's score of every visual token and its kept indices at each
 * budget. The engine must keep exactly the same indices; the only difference
 * allowed is at an exact tie on the boundary (PyTorch scores equal to the R-th
 * highest), where either choice is the top R. Such ties are counted.
 */

export interface KeptAgreement {
  /** Kept exactly the same indices. */
  equal: boolean;
  /** Indices kept by one side only that are exact ties with PyTorch's R-th score (differences forgiven). */
  ties: number;
  /** Indices kept by one side only that are not ties: each one a disagreement. */
  mismatches: number[];
  /** The smallest gap between PyTorch's R-th and (R+1)-th scores, relative to the largest score (how close a tie came). */
  boundaryGap: number;
}

/** Compares the engine's kept indices with PyTorch's, forgiving only exact ties at the R-th score. */
export function compareKept(
  engine: readonly number[],
  expected: readonly number[],
  scores: readonly number[],
): KeptAgreement {
  const sorted = [...scores].sort((a, b) => b - a);
  const r = expected.length;
  const boundaryGap = r > 0 && r < sorted.length ? (sorted[r - 1] - sorted[r]) / Math.max(sorted[0], 1e-30) : 1;
  const want = new Set(expected);
  const got = new Set(engine);
  const onlyOne = [...engine.filter((i) => !want.has(i)), ...expected.filter((i) => !got.has(i))];
  // a tie can swap tokens of equal score across the boundary, never change how many are kept
  if (engine.length !== r) return { equal: false, ties: 0, mismatches: onlyOne, boundaryGap };
  const boundary = r > 0 ? sorted[r - 1] : Number.POSITIVE_INFINITY;
  const mismatches = onlyOne.filter((i) => scores[i] !== boundary);
  return { equal: onlyOne.length === 0, ties: onlyOne.length - mismatches.length, mismatches, boundaryGap };
}
