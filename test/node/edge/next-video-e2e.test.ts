/**
 * End to end for LLaVA-NeXT and LLaVA-NeXT-Video: the official `openai` client, through the real edge
 * under `wrangler dev`, in front of the real GPU service serving a NeXT model and a NeXT-Video model
 * (models/demo-next and models/demo-video when they exist, else tiny random ones written by the project's
 * generator). A non-square photo-like picture and a short video (an MP4 as a `video_url` part, and its
 * frames as a `video` part) each get a streamed answer equal to the GPU service's own (greedy), whose first
 * chunk lays the kept visual tokens out per tile or per frame; bad videos (not a video, too many bytes, too
 * long, no frames, a frame that is no picture) get a 400 in OpenAI's shape, which the client raises.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import OpenAI from "openai";
import type { ChatCompletionContentPart } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultRetainBudget, keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { writeTinyNextModel } from "../../../gpu-service/tools/make-tiny/tiny-next.js";
import { makeClip, photoPng } from "../../support/clips.js";
import { type EdgeDevProcess, startEdgeDev } from "../../support/edge-dev.js";
import { type GpuServiceProcess, repoRoot, startGpuService } from "../../support/gpu-service.js";

const MAX_TOKENS = 16;
const models = mkdtempSync(join(tmpdir(), "twigserve-next-e2e-"));
/** The trained variants when they have landed, else tiny random ones (the plumbing is what is checked then). */
const SOURCES = { next: join(repoRoot, "models", "demo-next"), video: join(repoRoot, "models", "demo-video") };
const trained = {
  next: existsSync(join(SOURCES.next, "config.json")),
  video: existsSync(join(SOURCES.video, "config.json")),
};

let gpu: GpuServiceProcess;
let edge: EdgeDevProcess;
let openai: OpenAI;
let picture: Uint8Array;
let clip: { frames: Uint8Array[]; clip: Uint8Array };
let longClip: Uint8Array;

const dataUrl = (type: string, bytes: Uint8Array) => `data:${type};base64,${Buffer.from(bytes).toString("base64")}`;

beforeAll(async () => {
  for (const name of ["next", "video"] as const) {
    if (trained[name]) symlinkSync(SOURCES[name], join(models, name));
    else {
      mkdirSync(join(models, name));
      writeTinyNextModel(join(models, name), name === "next" ? 51 : 52, name === "next" ? "next" : "next-video");
    }
  }
  // a picture twice as wide as high, and clips of 96x96 frames (the trained video model's size)
  [picture, clip, { clip: longClip }] = await Promise.all([
    photoPng(192, 96, 3),
    makeClip(6, 96, 96),
    makeClip(28, 32, 32), // 7 s at 4 frames per second
  ]);
  gpu = await startGpuService(0, {
    TWIG_MODELS_DIR: models,
    TWIG_DEFAULT_MODEL: "next",
    TWIG_ENGINE_THREADS: "1",
    TWIG_MAX_VIDEO_SECONDS: "5",
  });
  edge = await startEdgeDev(
    {
      GPU_SERVICE_URL: gpu.url,
      MODEL_ROUTES: JSON.stringify({ next: [gpu.url], video: [gpu.url] }),
      MAX_VIDEO_BYTES: "200000",
    },
    { ready: (res) => res.status === 200 },
  );
  openai = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: edge.secrets.DEV_API_KEY, maxRetries: 0 });
}, 240_000);
afterAll(async () => {
  await edge?.stop();
  await gpu?.stop();
  rmSync(models, { recursive: true, force: true });
});

/** The GPU service's own greedy answer to the same request, called directly. */
async function direct(
  init: Partial<MessageInitShape<typeof GenerateRequestSchema>>,
  question: string,
): Promise<string> {
  const client = createClient(InferenceService, createConnectTransport({ baseUrl: gpu.url, httpVersion: "1.1" }));
  let text = "";
  const req = create(GenerateRequestSchema, {
    input: { case: "conversation", value: { messages: [{ role: "user", content: question }] } },
    sampling: { maxTokens: MAX_TOKENS, temperature: 0 },
    acceleration: { mode: Mode.TWIG },
    ...init,
  } as MessageInitShape<typeof GenerateRequestSchema>);
  for await (const e of client.generate(req)) if (e.event.case === "delta") text += e.event.value.text;
  return text;
}

/** The part of GET /v1/models/{id}'s `twigvlm` this test reads. */
interface ModelTwigInfo {
  num_layers: number;
  twig: { k: number; final_wipe_layer: number; default_pruned_fraction?: number };
}

interface TwigStarted {
  visual_tokens: number;
  kept_visual_indices: number[];
  visual_grids: { source?: string; index?: number; row_stride?: number; first_index: number }[];
  video_frames?: number[];
}

/** Streams a question about `part` through the edge with the openai client: the text and the first chunk's twigvlm. */
async function ask(model: string, part: unknown, question: string): Promise<{ text: string; started: TwigStarted }> {
  const stream = await openai.chat.completions.create({
    model,
    stream: true,
    temperature: 0,
    max_tokens: MAX_TOKENS,
    messages: [{ role: "user", content: [part as ChatCompletionContentPart, { type: "text", text: question }] }],
  });
  let text = "";
  let started: TwigStarted | undefined;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    started ??= (chunk as unknown as { twigvlm?: TwigStarted }).twigvlm;
    text += chunk.choices[0]?.delta.content ?? "";
  }
  expect(chunks).toBeGreaterThan(1);
  if (!started) throw new Error("no twigvlm in the first chunk");
  return { text, started };
}

describe("LLaVA-NeXT and NeXT-Video through the edge, with the openai client", () => {
  it(`answers about a non-square picture, tile by tile (${trained.next ? "the trained demo-next" : "a tiny random NeXT model"})`, async () => {
    const question = "describe the picture .";
    const r = await ask("next", { type: "image_url", image_url: { url: dataUrl("image/png", picture) } }, question);
    expect(r.text).toBe(await direct({ model: "next", image: { source: { case: "data", value: picture } } }, question));
    // the base view, then the tiles of a 1x2 canvas: each tile's rows a row of tiles (and its newline) apart
    const grids = r.started.visual_grids;
    expect(grids.map((g) => [g.source, g.index])).toEqual([
      ["base", 0],
      ["tile", 0],
      ["tile", 1],
    ]);
    expect(grids[1].row_stride).toBeGreaterThan(0);
    expect(r.started.kept_visual_indices.length).toBeLessThan(r.started.visual_tokens);
  });

  it(`answers about a short MP4 (${trained.video ? "the trained demo-video" : "a tiny random NeXT-Video model"}), frame by frame`, async () => {
    const question = "describe the video .";
    const r = await ask("video", { type: "video_url", video_url: { url: dataUrl("video/mp4", clip.clip) } }, question);
    expect(r.text).toBe(await direct({ model: "video", video: { data: clip.clip } }, question));
    expect(r.started.video_frames).toEqual([0, 1, 2, 3, 4, 5]);
    expect(r.started.visual_grids.map((g) => [g.source, g.index])).toEqual([0, 1, 2, 3, 4, 5].map((f) => ["frame", f]));
  });

  it("lists the video model's own default share to prune, and a request that names no budget prunes its clip by it", async () => {
    const twigConfig = JSON.parse(readFileSync(join(models, "video", "twig", "config.json"), "utf8"));
    const own = twigConfig.default_pruned_fraction as number | undefined;
    if (trained.video) expect(own).toBe(2 / 3); // the model card's choice: 88.9% loses the per-frame counts
    const res = await fetch(`${edge.url}/v1/models/video`, {
      headers: { authorization: `Bearer ${edge.secrets.DEV_API_KEY}` },
    });
    const info = ((await res.json()) as { twigvlm: ModelTwigInfo }).twigvlm;
    expect(info.twig.default_pruned_fraction).toBe(own);
    const r = await ask(
      "video",
      { type: "video_url", video_url: { url: dataUrl("video/mp4", clip.clip) } },
      "what is it ?",
    );
    const N = r.started.visual_tokens;
    const shape = {
      visualTokens: N,
      numLayers: info.num_layers,
      k: info.twig.k,
      finalWipeLayer: info.twig.final_wipe_layer,
    };
    expect(r.started.kept_visual_indices).toHaveLength(keptTokensForBudget(defaultRetainBudget(shape, own), shape));
  });

  it("answers about a video given as its frames, as the GPU service does", async () => {
    const question = "which object moves ?";
    const part = { type: "video", video: clip.frames.map((f) => dataUrl("image/png", f)) };
    const r = await ask("video", part, question);
    expect(r.text).toBe(await direct({ model: "video", video: { frames: clip.frames } }, question));
    expect(r.started.video_frames).toHaveLength(6);
  });

  const bad: { name: string; part: () => unknown; code: string; message: RegExp }[] = [
    {
      name: "not a video",
      part: () => ({ type: "video_url", video_url: { url: dataUrl("video/mp4", picture) } }),
      code: "invalid_video",
      message: /not an MP4 or WebM file/,
    },
    {
      name: "too many bytes",
      part: () => ({ type: "video_url", video_url: { url: dataUrl("video/mp4", new Uint8Array(300_000)) } }),
      code: "video_too_large",
      message: /larger than the limit of 200000 bytes \(MAX_VIDEO_BYTES\)/,
    },
    {
      name: "too long (the GPU service's probe)",
      part: () => ({ type: "video_url", video_url: { url: dataUrl("video/mp4", longClip) } }),
      code: "invalid_request_error",
      message: /lasts 7\.0 s; the limit is 5 s/,
    },
    { name: "no frames", part: () => ({ type: "video", video: [] }), code: "invalid_video", message: /has no frames/ },
    {
      name: "a frame that is no picture",
      part: () => ({
        type: "video",
        video: [dataUrl("image/png", clip.frames[0]), dataUrl("image/png", new Uint8Array([1, 2, 3]))],
      }),
      code: "invalid_video",
      message: /video frame 1: unsupported image type/,
    },
  ];
  let refused = 0;
  for (const b of bad) {
    it(`refuses a bad video with a 400: ${b.name}`, async () => {
      const err = await ask("video", b.part(), "what moves ?").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      const e = err as InstanceType<typeof OpenAI.BadRequestError>;
      expect(e.status).toBe(400);
      expect(e.code).toBe(b.code);
      expect(e.message).toMatch(b.message);
      refused++;
    });
  }
  it("refused every bad video", () => expect(refused).toBe(bad.length));
});
