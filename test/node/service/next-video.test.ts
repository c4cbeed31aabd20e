/**
 * The real GPU service (Connect over loopback) serving a LLaVA-NeXT model, a LLaVA-NeXT-Video model and a
 * LLaVA-1.5 model, all tiny and random, written by the project's generator: a non-square picture gets
 * one grid for the base view and one per tile; a video (MP4 bytes, or its frames) gets one grid per
 * sampled frame and the frames' indices; ListModels says what each reads; bad videos (not a video, too
 * many bytes, too long, no frames, a video for a picture model, an image and a video at once) are
 * INVALID_ARGUMENT with a message naming the problem, before they queue.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  type GenerateEvent,
  GenerateRequestSchema,
  GridSource,
  InferenceService,
  Mode,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyModel } from "../../../gpu-service/tools/make-tiny/tiny-model.js";
import { writeTinyNextModel } from "../../../gpu-service/tools/make-tiny/tiny-next.js";
import { makeClip, photoPng } from "../../support/clips.js";
import { type GpuServiceProcess, startGpuService } from "../../support/gpu-service.js";

const models = mkdtempSync(join(tmpdir(), "twigserve-next-models-"));
let service: GpuServiceProcess;
let client: ReturnType<typeof createClient<typeof InferenceService>>;
let clip: { frames: Uint8Array[]; clip: Uint8Array };
let longClip: Uint8Array;
let picture: Uint8Array;

beforeAll(async () => {
  for (const name of ["next", "video", "llava"]) mkdirSync(join(models, name));
  writeTinyNextModel(join(models, "next"), 31, "next");
  writeTinyNextModel(join(models, "video"), 32, "next-video");
  writeTinyModel(join(models, "llava"), 33);
  [clip, { clip: longClip }, picture] = await Promise.all([
    makeClip(10, 40, 30),
    makeClip(24, 16, 16), // 6 s at 4 frames per second
    photoPng(90, 50),
  ]);
  service = await startGpuService(0, {
    TWIG_MODELS_DIR: models,
    TWIG_DEFAULT_MODEL: "next",
    TWIG_ENGINE_THREADS: "1",
    TWIG_MAX_VIDEO_SECONDS: "5",
    TWIG_MAX_VIDEO_FRAMES: "4",
    TWIG_MAX_VIDEO_BYTES: "200000",
  });
  client = createClient(InferenceService, createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }));
}, 120_000);
afterAll(async () => {
  await service?.stop();
  rmSync(models, { recursive: true, force: true });
});

type Init = MessageInitShape<typeof GenerateRequestSchema>;

async function generate(init: Partial<Init>): Promise<{ events: GenerateEvent[]; code: Code | "OK"; message: string }> {
  const events: GenerateEvent[] = [];
  try {
    const req = create(GenerateRequestSchema, {
      tenantId: "t",
      input: { case: "conversation", value: { messages: [{ role: "user", content: "what moves ?" }] } },
      sampling: { maxTokens: 6 },
      acceleration: { mode: Mode.TWIG },
      ...init,
    } as Init);
    for await (const e of client.generate(req)) events.push(e);
    return { events, code: "OK", message: "" };
  } catch (err) {
    const e = ConnectError.from(err);
    return { events, code: e.code, message: e.rawMessage };
  }
}

const started = (events: GenerateEvent[]) => {
  const e = events[0]?.event;
  if (e?.case !== "started") throw new Error("no Started event first");
  return e.value;
};

describe("LLaVA-NeXT and LLaVA-NeXT-Video through the GPU service", () => {
  it("lists what each model reads", async () => {
    const { models: list } = await client.listModels({});
    const by = Object.fromEntries(list.map((m) => [m.name, m]));
    expect(by.next).toMatchObject({ architecture: "llava_next", visualTokensVary: true, maxVideoFrames: 0 });
    expect(by.video).toMatchObject({
      architecture: "llava_next_video",
      visualTokensVary: true,
      videoTokensPerFrame: 4,
      maxVideoFrames: 4,
    });
    expect(by.llava).toMatchObject({ architecture: "llava", visualTokensVary: false, visualTokens: 16 });
    expect(by.next.visualTokens).toBe(16 + 8 * 9); // the most a picture gives: a 2x2 canvas
  });

  it("answers about a non-square picture with a grid for the base view and one per tile", async () => {
    const r = await generate({ model: "next", image: { source: { case: "data", value: picture } } });
    expect(r.code).toBe("OK");
    const s = started(r.events);
    expect(s.visualTokens).toBe(52); // 90x50: a 2x2 canvas, 4 of its 8 feature rows kept, each with its newline
    expect(s.visualGrids.map((g) => [g.source, g.index, g.rowStride])).toEqual([
      [GridSource.BASE, 0, 0],
      [GridSource.TILE, 0, 9],
      [GridSource.TILE, 1, 9],
      [GridSource.TILE, 2, 9],
      [GridSource.TILE, 3, 9],
    ]);
    expect(r.events.at(-1)?.event.case).toBe("finished");
  });

  for (const kind of ["bytes", "frames"] as const) {
    it(`answers about a video given as ${kind}: frames sampled to the cap, one grid per frame`, async () => {
      const video = kind === "bytes" ? { data: clip.clip } : { frames: clip.frames };
      const r = await generate({ model: "video", video });
      expect(r.code).toBe("OK");
      const s = started(r.events);
      expect([...s.videoFrames]).toEqual([0, 2, 5, 7]); // np.arange(0, 10, 10 / 4)
      expect(s.visualTokens).toBe(4 * 4);
      expect(s.visualGrids.map((g) => [g.source, g.index, g.firstIndex])).toEqual([
        [GridSource.FRAME, 0, 0],
        [GridSource.FRAME, 1, 4],
        [GridSource.FRAME, 2, 8],
        [GridSource.FRAME, 3, 12],
      ]);
      const finished = r.events.at(-1)?.event;
      expect(finished?.case).toBe("finished");
      if (finished?.case === "finished") expect(finished.value.stats?.visualTokens).toBe(16);
    });
  }

  const bad: { name: string; init: () => Partial<Init>; message: RegExp }[] = [
    {
      name: "not a video",
      init: () => ({ model: "video", video: { data: picture } }),
      message: /not an MP4 or WebM file/,
    },
    {
      name: "too many bytes",
      init: () => ({ model: "video", video: { data: new Uint8Array(300_000).fill(1) } }),
      message: /300000 bytes; the limit is 200000/,
    },
    {
      name: "too long",
      init: () => ({ model: "video", video: { data: longClip } }),
      message: /lasts 6\.0 s; the limit is 5 s/,
    },
    { name: "no frames", init: () => ({ model: "video", video: { frames: [] } }), message: /the video has no frames/ },
    {
      name: "a frame that is no picture",
      init: () => ({ model: "video", video: { frames: [new Uint8Array([1, 2, 3])] } }),
      message: /video frame 0: the image is not a PNG, JPEG, WebP or GIF file/,
    },
    {
      name: "a video for a model that reads pictures only",
      init: () => ({ model: "llava", video: { data: clip.clip } }),
      message: /reads pictures only/,
    },
    {
      name: "an image and a video",
      init: () => ({ model: "video", video: { data: clip.clip }, image: { source: { case: "data", value: picture } } }),
      message: /an image or a video, not both/,
    },
    {
      name: "a raw prompt without the <video> placeholder",
      init: () => ({
        model: "video",
        video: { data: clip.clip },
        input: { case: "prompt", value: "USER: <image> what ?" },
      }),
      message: /must contain the <video> placeholder/,
    },
  ];
  let refused = 0;
  for (const b of bad) {
    it(`refuses ${b.name} with INVALID_ARGUMENT before it starts`, async () => {
      const r = await generate(b.init());
      expect(r.code).toBe(Code.InvalidArgument);
      expect(r.message).toMatch(b.message);
      expect(r.events).toEqual([]);
      refused++;
    });
  }
  it("refused every bad request", () => expect(refused).toBe(bad.length));

  /** The next model's picture (52 visual tokens, K=2, K_f=6, L=8: R-bar in [13, 39]) in ttp-only mode. */
  const ttpOnly = (acceleration: { retainBudget?: number; prunedFraction?: number }) =>
    generate({
      model: "next",
      image: { source: { case: "data", value: picture } },
      acceleration: { mode: Mode.TTP_ONLY, ...acceleration },
    });

  it("checks a retain budget against the request's own N", async () => {
    const over = await ttpOnly({ retainBudget: 40 });
    expect(over.code).toBe(Code.InvalidArgument);
    expect(over.message).toMatch(/retain budget 40 is outside \[13, 39\] for N=52/);
    const ok = await ttpOnly({ retainBudget: 14 });
    expect(ok.code).toBe("OK");
    expect(started(ok.events).keptVisualIndices).toHaveLength(2); // R = ceil((8*14 - 52*2) / 4)
  });

  it("turns a pruned fraction into each request's own budget", async () => {
    // 77.8% pruned is R-bar round(52 * 0.222) = 12, below N*K/L = 13, and refused as such
    const low = await ttpOnly({ prunedFraction: 0.778 });
    expect(low.code).toBe(Code.InvalidArgument);
    expect(low.message).toMatch(
      /pruned_fraction 0\.778 gives R-bar 12 for this request: retain budget 12 is outside \[13, 39\]/,
    );
    // 66.7%: R-bar round(52 * 0.333) = 17, R = ceil((8*17 - 52*2) / 4) = 8
    const ok = await ttpOnly({ prunedFraction: 0.667 });
    expect(ok.code).toBe("OK");
    expect(started(ok.events).keptVisualIndices).toHaveLength(8);
    const both = await ttpOnly({ prunedFraction: 0.667, retainBudget: 17 });
    expect(both.code).toBe(Code.InvalidArgument);
    expect(both.message).toMatch(/give retain_budget or pruned_fraction, not both/);
  });
});
