/** A planned request for scheduler tests with fake engines: its prompt is a tag the fake engine records. */
import type { GenerateParams } from "../../gpu-service/src/engine/plan.js";

export const taggedParams = (tag: string): GenerateParams => ({
  image: new Uint8Array(),
  prompt: tag,
  maxTokens: 1,
  temperature: 0,
  topP: 1,
  stop: [],
  plan: { mode: "base", visualTokens: 1, retainBudget: null, keptVisualTokens: 1, scoreSource: null, draft: null },
});
