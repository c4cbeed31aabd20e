import { describe, expect, it } from "vitest";
import {
  budgetForPrunedFraction,
  defaultRetainBudget,
  keptTokensForBudget,
  maxRetainBudget,
  minRetainBudget,
} from "../../../gpu-service/src/engine/decoding/budget.js";

const llava = { visualTokens: 576, numLayers: 32, k: 2, finalWipeLayer: 24 };

describe("TTP budget", () => {
  it("gives the paper's R = 41/134/227 for R-bar 64/128/192 on LLaVA-1.5", () => {
    expect([64, 128, 192].map((b) => keptTokensForBudget(b, llava))).toEqual([41, 134, 227]);
  });

  it("defaults to the paper's R-bar N/9, or on shallow models to the paper's share of tokens above K", () => {
    expect(defaultRetainBudget(llava)).toBe(64);
    // 16 layers, 144 tokens: N/9 = 16 is below N*K/L = 18, so R would be 0; instead R = ceil(144*41/576) = 11 or more
    const demo = { visualTokens: 144, numLayers: 16, k: 2, finalWipeLayer: 12 };
    expect(defaultRetainBudget(demo)).toBe(25);
    expect(keptTokensForBudget(25, demo)).toBe(12);
    const tiny = { visualTokens: 16, numLayers: 8, k: 2, finalWipeLayer: 6 };
    expect(keptTokensForBudget(defaultRetainBudget(tiny), tiny)).toBe(2);
  });

  it("takes a model's own pruned share for the default where it is in range and keeps a token above K", () => {
    expect(defaultRetainBudget(llava, 2 / 3)).toBe(192);
    expect(defaultRetainBudget(llava, 7 / 9)).toBe(128);
    // 144 tokens, 16 layers: 2/3 gives R-bar 48, in [18, 108]; 0.9 gives 14, below N*K/L = 18: the headline rule's 25
    const demo = { visualTokens: 144, numLayers: 16, k: 2, finalWipeLayer: 12 };
    expect(defaultRetainBudget(demo, 2 / 3)).toBe(48);
    expect(defaultRetainBudget(demo, 0.9)).toBe(defaultRetainBudget(demo));
    expect(defaultRetainBudget(demo, 0.9)).toBe(25);
    // 0.1 gives 130, above N*K_f/L = 108
    expect(defaultRetainBudget(demo, 0.1)).toBe(25);
  });

  it("maps the pruned fractions 88.9/77.8/66.7% to R-bar 64/128/192 of 576", () => {
    expect([8 / 9, 7 / 9, 6 / 9].map((f) => budgetForPrunedFraction(f, 576))).toEqual([64, 128, 192]);
  });

  it("keeps R-bar's definition: the average over layers of the tokens each layer sees", () => {
    const s = { visualTokens: 144, numLayers: 24, k: 2, finalWipeLayer: 18 };
    for (const budget of [16, 32, 48, 100]) {
      const r = keptTokensForBudget(budget, s);
      const avg = (s.visualTokens * s.k + r * (s.finalWipeLayer - s.k)) / s.numLayers;
      expect(avg).toBeGreaterThanOrEqual(budget - 1e-9);
      expect(avg - budget).toBeLessThan((s.finalWipeLayer - s.k) / s.numLayers);
    }
  });

  it("rejects budgets below N*K/L or above N*K_f/L with a clear message", () => {
    expect(minRetainBudget(llava)).toBe(36);
    expect(maxRetainBudget(llava)).toBe(432);
    expect(() => keptTokensForBudget(20, llava)).toThrow(/outside \[36, 432\]/);
    expect(() => keptTokensForBudget(500, llava)).toThrow(/outside/);
    expect(keptTokensForBudget(36, llava)).toBe(0);
    expect(keptTokensForBudget(432, llava)).toBe(576);
  });
});
