/**
 * The request's TTP scorer: unspecified leaves the choice to the model (its twig's
 * ttp_score_source), the two named scorers pass through, and an unknown value is refused.
 */
import { create } from "@bufbuild/protobuf";
import { GenerateRequestSchema, Mode, ScoreSource } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../../../gpu-service/src/engine/engine.js";
import { readRequest, validateRequest } from "../../../gpu-service/src/server/validate.js";

const engine = {
  info: {
    name: "tiny",
    visualTokens: 16,
    numLayers: 8,
    contextLength: 512,
    twig: { k: 2, t: 2, finalWipeLayer: 6, defaultRetainBudget: 6, defaultScoreSource: "all-text" },
  },
} as unknown as Engine;

let png: Uint8Array;
beforeAll(async () => {
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#808080" } })
    .png()
    .toBuffer();
});

const request = (scoreSource: number) =>
  create(GenerateRequestSchema, {
    model: "tiny",
    image: { source: { case: "data", value: png } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: "what is it ?" }] } },
    acceleration: { mode: Mode.TTP_ONLY, scoreSource },
  });

describe("score_source", () => {
  it("leaves an unspecified scorer to the model and passes a named one through", () => {
    expect(readRequest(request(ScoreSource.UNSPECIFIED), engine).scoreSource).toBeUndefined();
    expect(readRequest(request(ScoreSource.LAST_TOKEN), engine).scoreSource).toBe("last-token");
    expect(readRequest(request(ScoreSource.ALL_TEXT), engine).scoreSource).toBe("all-text");
  });

  it("plans the model's own scorer where the request names none, and the named one where it does", async () => {
    const plan = async (s: number) => (await validateRequest(request(s), engine)).plan.scoreSource;
    expect(await plan(ScoreSource.UNSPECIFIED)).toBe("all-text"); // the twig's default, as the engine applied it
    expect(await plan(ScoreSource.LAST_TOKEN)).toBe("last-token");
    expect(await plan(ScoreSource.ALL_TEXT)).toBe("all-text");
  });

  it("refuses an unknown scorer with INVALID_ARGUMENT", () => {
    expect(() => readRequest(request(7), engine)).toThrow(/unknown score_source 7/);
  });
});
