/**
 * Planning a request (engine/plan-request.ts), the one place that checks a request against its model
 * and resolves it: each bad input is refused with the message the service gives for it (the service
 * tests check the same messages end to end), and a good one is resolved the way the engine runs it.
 */
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import { defaultRetainBudget, keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import type { EngineInfo } from "../../../gpu-service/src/engine/engine.js";
import { InvalidRequestError } from "../../../gpu-service/src/engine/errors.js";
import type { RequestInput } from "../../../gpu-service/src/engine/plan.js";
import {
  type AccelerationAsk,
  checkAcceleration,
  DEFAULT_DRAFT,
  planAcceleration,
  planRequest,
} from "../../../gpu-service/src/engine/plan-request.js";

/** The tiny random model's shape: N = 16, L = 8, K = 2, K_f = 6 (R-bar from 4 to 12). */
const tiny: EngineInfo = {
  name: "tiny",
  visualTokens: 16,
  numLayers: 8,
  contextLength: 512,
  twig: { k: 2, t: 2, finalWipeLayer: 6, defaultRetainBudget: 5, defaultScoreSource: "all-text" },
};
const shape = { visualTokens: 16, numLayers: 8, k: 2, finalWipeLayer: 6 };
const noTwig: EngineInfo = { ...tiny, name: "plain", twig: undefined };
/** A model whose N varies (LLaVA-NeXT): at most 60 visual tokens a picture. */
const next: EngineInfo = { ...tiny, name: "next", visualTokens: 60, visualTokensVary: true };

let png: Uint8Array;
beforeAll(async () => {
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#808080" } })
    .png()
    .toBuffer();
});

const input = (over: Partial<RequestInput> = {}): RequestInput => ({
  image: png,
  messages: [{ role: "user", content: "what is it ?" }],
  maxTokens: 8,
  temperature: 0,
  topP: 1,
  stop: [],
  mode: "twig",
  ...over,
});

async function refusal(over: Partial<RequestInput>, info: EngineInfo = tiny): Promise<string> {
  const err = await planRequest(input(over), info).then(
    () => undefined,
    (e) => e,
  );
  expect(err, JSON.stringify(over)).toBeInstanceOf(InvalidRequestError);
  return (err as Error).message;
}

describe("planRequest refuses, with the service's messages", () => {
  const cases: [string, Partial<RequestInput>, string | RegExp, EngineInfo?][] = [
    [
      "a twig mode on a model without one",
      { mode: "ttp-only" },
      "mode ttp-only needs a twig and model plain has none",
      noTwig,
    ],
    [
      "a budget on a model without a twig",
      { mode: "base", retainBudget: 6 },
      "model plain has no twig, so no retain budget applies",
      noTwig,
    ],
    [
      "a budget above R = N",
      { retainBudget: 500 },
      "retain_budget 500 is outside [4, 12] for model tiny (16 visual tokens)",
    ],
    [
      "a budget below R = 0",
      { retainBudget: 3 },
      "retain_budget 3 is outside [4, 12] for model tiny (16 visual tokens)",
    ],
    [
      "a bad budget in a mode that keeps every token",
      { mode: "base", retainBudget: 17 },
      /^retain_budget 17 is outside/,
    ],
    ["a draft too long", { draftLength: 17 }, "draft_length must be at most 16, got 17"],
    ["a draft threshold above 1", { draftThreshold: 1.5 }, "draft_threshold must be in (0, 1], got 1.5"],
    [
      "a raw prompt without the placeholder",
      { messages: undefined, prompt: "USER: hi ASSISTANT:" },
      "a raw prompt must contain the <image> placeholder",
    ],
    [
      "a raw prompt with two placeholders",
      { messages: undefined, prompt: "USER: <image> <image> hi ASSISTANT:" },
      "the prompt must contain exactly one <image> placeholder",
    ],
    [
      "a conversation that names the placeholder itself",
      { messages: [{ role: "user", content: "<image> what ?" }] },
      "the prompt must contain exactly one <image> placeholder",
    ],
    [
      "a pruning mode on a prompt that ends with the image",
      { mode: "fastv", messages: undefined, prompt: "USER: <image> " },
      "mode fastv prunes visual tokens, so the prompt must go on after the image",
    ],
    [
      "a conversation without a user",
      { messages: [{ role: "system", content: "x" }] },
      "the conversation has no user message",
    ],
    [
      "a conversation that ends with the assistant",
      {
        messages: [
          { role: "user", content: "x" },
          { role: "assistant", content: "y" },
        ],
      },
      "the last message of the conversation must be the user's",
    ],
    ["max_tokens past the context", { maxTokens: 100_000 }, "max_tokens 100000 exceeds the context length 512"],
    ["a temperature above 2", { temperature: 2.5 }, "temperature must be in [0, 2], got 2.5"],
    ["a NaN top_p", { topP: Number.NaN }, "top_p must be in (0, 1], got NaN"],
    [
      "a video for a picture model",
      { image: undefined, video: { data: new Uint8Array(8) } },
      "model tiny reads pictures only: send an image, not a video",
    ],
    [
      "bytes that are no picture",
      { image: new TextEncoder().encode("hello") },
      "the image is not a PNG, JPEG, WebP or GIF file",
    ],
  ];
  for (const [what, over, message, info] of cases) {
    it(`refuses ${what}`, async () => {
      const got = await refusal(over, info);
      if (typeof message === "string") expect(got).toBe(message);
      else expect(got).toMatch(message);
    });
  }

  it("checks a budget against the request's own N where N varies, and against the most a request can give when the mode keeps every token", () => {
    // a picture of 52 visual tokens: R-bar in [13, 39]
    const plan = (ask: AccelerationAsk) => () => {
      checkAcceleration(ask, next);
      return planAcceleration(ask, next, 52);
    };
    expect(plan({ mode: "ttp-only", retainBudget: 40 })).toThrow(
      "retain budget 40 is outside [13, 39] for N=52, K=2, K_f=6, L=8",
    );
    expect(plan({ mode: "ttp-only", retainBudget: 14 })().keptVisualTokens).toBe(2); // ceil((8*14 - 52*2) / 4)
    // no pruning: the budget applies to nothing, and may be anything a picture of the model could take
    expect(plan({ mode: "ssd-only", retainBudget: 40 })().retainBudget).toBeNull();
    expect(plan({ mode: "ssd-only", retainBudget: 46 })).toThrow(
      "retain_budget 46 is outside [0, 45] for model next (at most 60 visual tokens)",
    );
  });

  it("turns a pruned fraction into the R-bar of the request's own N, and refuses one out of range or beside a budget", () => {
    const plan = (ask: AccelerationAsk, n: number) => () => {
      checkAcceleration(ask, next);
      return planAcceleration(ask, next, n);
    };
    // round(52 (1 - 0.667)) = 17 and round(36 (1 - 0.667)) = 12: each request its own R-bar
    expect(plan({ mode: "ttp-only", prunedFraction: 0.667 }, 52)()).toMatchObject({
      retainBudget: 17,
      keptVisualTokens: 8,
    });
    expect(plan({ mode: "ttp-only", prunedFraction: 0.667 }, 36)()).toMatchObject({
      retainBudget: 12,
      keptVisualTokens: 6,
    });
    // the same R-bar asked as a budget gives the same plan
    expect(plan({ mode: "ttp-only", prunedFraction: 0.667 }, 52)()).toEqual(
      plan({ mode: "ttp-only", retainBudget: 17 }, 52)(),
    );
    // 95% of 52 is R-bar 3, below N*K/L = 13
    expect(plan({ mode: "ttp-only", prunedFraction: 0.95 }, 52)).toThrow(
      "pruned_fraction 0.95 gives R-bar 3 for this request: retain budget 3 is outside [13, 39] for N=52, K=2, K_f=6, L=8",
    );
    // a mode that keeps every token: the fraction applies to nothing
    expect(plan({ mode: "ssd-only", prunedFraction: 0.95 }, 52)().retainBudget).toBeNull();
    for (const f of [0, 1, -0.5, 1.5, Number.NaN])
      expect(plan({ mode: "ttp-only", prunedFraction: f }, 52)).toThrow(/^pruned_fraction must be between 0 and 1/);
    expect(plan({ mode: "ttp-only", prunedFraction: 0.5, retainBudget: 20 }, 52)).toThrow(
      "give retain_budget or pruned_fraction, not both",
    );
    expect(() => checkAcceleration({ mode: "base", prunedFraction: 0.5 }, noTwig)).toThrow(
      "model plain has no twig, so no pruned fraction applies",
    );
  });

  it("prunes a model's own default share of each request's N when the request names no budget", () => {
    const withShare = (f: number): EngineInfo => ({
      ...next,
      twig: { ...(next.twig as NonNullable<EngineInfo["twig"]>), defaultPrunedFraction: f },
    });
    const own = withShare(2 / 3);
    const plan = (ask: AccelerationAsk, n: number, info = own) => {
      checkAcceleration(ask, info);
      return planAcceleration(ask, info, n);
    };
    // round(52 / 3) = 17 and round(36 / 3) = 12; without the model's share, N = 52 gets the headline rule's 15
    // (N/9 = 6 is below N*K/L = 13, so the least R-bar keeping the paper's share above K)
    expect(plan({ mode: "twig" }, 52).retainBudget).toBe(17);
    expect(plan({ mode: "ttp-only" }, 36).retainBudget).toBe(12);
    expect(plan({ mode: "twig" }, 52, next).retainBudget).toBe(defaultRetainBudget({ ...shape, visualTokens: 52 }));
    expect(plan({ mode: "twig" }, 52, next).retainBudget).toBe(15);
    // what a request names wins
    expect(plan({ mode: "twig", retainBudget: 14 }, 52).retainBudget).toBe(14);
    expect(plan({ mode: "twig", prunedFraction: 0.75 }, 52).retainBudget).toBe(13);
    // a mode that keeps every token has no budget
    expect(plan({ mode: "ssd-only" }, 52).retainBudget).toBeNull();
    // a share that would blind the layers above K on some N falls back to the headline rule there
    expect(plan({ mode: "twig" }, 52, withShare(0.9)).retainBudget).toBe(
      defaultRetainBudget({ ...shape, visualTokens: 52 }),
    );
  });
});

describe("planRequest resolves", () => {
  it("the model's defaults: R-bar for the request's N and its R, the twig's scorer, delta and theta", async () => {
    const { plan } = await planRequest(input(), tiny);
    const budget = defaultRetainBudget(shape);
    expect(plan).toEqual({
      mode: "twig",
      visualTokens: 16,
      retainBudget: budget,
      keptVisualTokens: keptTokensForBudget(budget, shape),
      scoreSource: "all-text",
      draft: DEFAULT_DRAFT,
    });
  });

  it("what the request names, and null for what its mode does not use", async () => {
    const ask = { retainBudget: 6, scoreSource: "last-token", draftLength: 3, draftThreshold: 0.5 } as const;
    const plans = Object.fromEntries(
      await Promise.all(
        (["twig", "ttp-only", "ssd-only", "base", "fastv", "visionzip"] as const).map(async (mode) => [
          mode,
          (await planRequest(input({ mode, ...ask }), tiny)).plan,
        ]),
      ),
    );
    expect(plans.twig).toMatchObject({ retainBudget: 6, keptVisualTokens: 4, scoreSource: "last-token" });
    expect(plans.twig.draft).toEqual({ length: 3, threshold: 0.5 });
    expect(plans["ttp-only"]).toMatchObject({ retainBudget: 6, scoreSource: "last-token", draft: null });
    expect(plans["ssd-only"]).toMatchObject({ retainBudget: null, keptVisualTokens: 16, scoreSource: null });
    expect(plans["ssd-only"].draft).toEqual({ length: 3, threshold: 0.5 });
    expect(plans.base).toMatchObject({ retainBudget: null, keptVisualTokens: 16, scoreSource: null, draft: null });
    expect(plans.fastv).toMatchObject({ retainBudget: 6, scoreSource: "last-token", draft: null });
    expect(plans.visionzip).toMatchObject({ retainBudget: 6, scoreSource: null, draft: null });
  });

  it("a prompt that ends with the image in the modes that keep every visual token", async () => {
    for (const mode of ["base", "ssd-only"] as const) {
      const { plan } = await planRequest(input({ mode, messages: undefined, prompt: "USER: <image>" }), tiny);
      expect(plan.mode).toBe(mode);
    }
  });
});
