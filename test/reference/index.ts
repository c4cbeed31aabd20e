/** Test-only references: what the engine computes, written again from the definitions (see each module). */
export { lastLayerAttention, promptRows, wordIds } from "./prompt.js";
export {
  chiSquare,
  referenceDistribution,
  speculativeOutcome,
  TestRng,
} from "./sampling.js";
export { referenceTopR, referenceVisualScores, type Scorer, tieAtBoundary } from "./ttp.js";
