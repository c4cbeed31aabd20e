/**
 * End to end: the real GPU service (on the demo model) behind the real edge
 * under `wrangler dev`, both on loopback ports the system picks. The official
 * `openai` client, with the dev key the edge was given, streams a chat
 * completion with an image and gets exactly the text the GPU service gives
 * when called directly with the same parameters (greedy); the non-stream call
 * with an uploaded image does too. The edge authenticates to the GPU service
 * with its service token. A streaming client that goes away cancels the
 * service's generation: a pass-through proxy in front of the service freezes
 * it (SIGSTOP) at the answer's first delta, so the generation is certainly
 * still running when the client leaves, and shows the edge hanging up (it
 * notices the client's absence at its next write, a `: keep-alive` at most
 * two seconds later).
 * (A non-stream client that goes away is tested inside workerd,
 * test/workers/disconnect.test.ts: local workerd's HTTP listener does not
 * notice a client that leaves before the response starts.)
 *
 * TWIG_E2E_MODEL_DIR selects another model directory than models/demo.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  GenerateRequestSchema,
  InferenceService,
  Mode,
  ScoreSource,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import OpenAI from "openai";
import type {
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
} from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EdgeDevProcess, startEdgeDev } from "../../support/edge-dev.js";
import { type EdgeModels, edgeModelsDir } from "../../support/edge-models.js";
import { type FrameProxy, startFrameProxy } from "../../support/frame-proxy.js";
import { GpuPause } from "../../support/gpu-pause.js";
import { demoModelDir, type GpuServiceProcess, startGpuService } from "../../support/gpu-service.js";

const SERVICE_TOKEN = "e2e-service-token";
const QUESTION = "describe the picture .";
const MAX_TOKENS = 40;
// a third of the demo model's visual tokens (R-bar 48 of 144), where it still describes (its default prunes 88.9%)
const RETAIN = 48;

let models: EdgeModels;
let model: string;
let gpu: GpuServiceProcess;
let proxy: FrameProxy;
let pause: GpuPause;
let edge: EdgeDevProcess;
let png: Buffer;
let openai: OpenAI;

/** Waits until `check` returns a value that is not undefined (bounded only by the test's timeout). */
async function until<T>(check: () => T | undefined): Promise<T> {
  while (true) {
    const value = check();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  models = edgeModelsDir({ source: process.env.TWIG_E2E_MODEL_DIR });
  model = models.model;
  // a held-out scene of the demo model's world
  png = readFileSync(resolve(demoModelDir, "../../training/data/test/0000.png"));
  gpu = await startGpuService(0, {
    TWIG_MODELS_DIR: models.dir,
    TWIG_DEFAULT_MODEL: model,
    TWIG_ENGINE_THREADS: "1",
    TWIG_SERVICE_TOKEN: SERVICE_TOKEN,
  });
  pause = new GpuPause(gpu);
  proxy = await startFrameProxy(gpu.url);
  edge = await startEdgeDev({
    GPU_SERVICE_URL: gpu.url,
    MODEL_ROUTES: JSON.stringify({ [model]: [proxy.url] }),
    GPU_SERVICE_TOKEN: SERVICE_TOKEN,
    // longer than any test: only a client that goes away may end a frozen answer here, not the stall watchdog
    GPU_STALL_TIMEOUT_MS: "600000",
  });
  openai = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: edge.secrets.DEV_API_KEY, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  pause?.resume();
  await edge?.stop();
  await proxy?.close();
  await gpu?.stop();
  models?.remove();
});

/** What the GPU service answers when called directly (Connect, with its token), greedy. */
async function direct(acceleration: { retainBudget?: number; scoreSource?: ScoreSource } = {}): Promise<{
  text: string;
  promptTokens: number;
  completionTokens: number;
  visualTokensKept: number;
}> {
  const client = createClient(InferenceService, createConnectTransport({ baseUrl: gpu.url, httpVersion: "1.1" }));
  const req = create(GenerateRequestSchema, {
    model,
    image: { source: { case: "data", value: png } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: QUESTION }] } },
    sampling: { maxTokens: MAX_TOKENS, temperature: 0, topP: 1 },
    acceleration: { mode: Mode.TWIG, retainBudget: RETAIN, ...acceleration },
  });
  let text = "";
  let usage = { promptTokens: 0, completionTokens: 0, visualTokensKept: -1 };
  for await (const ev of client.generate(req, { headers: { authorization: `Bearer ${SERVICE_TOKEN}` } })) {
    if (ev.event.case === "delta") text += ev.event.value.text;
    if (ev.event.case === "finished") {
      const f = ev.event.value;
      usage = {
        promptTokens: f.usage?.promptTokens ?? 0,
        completionTokens: f.usage?.completionTokens ?? 0,
        visualTokensKept: f.stats?.visualTokensKept ?? -1,
      };
    }
  }
  return { text, ...usage };
}

const userMessage = (url: string) => [
  {
    role: "user" as const,
    content: [
      { type: "image_url" as const, image_url: { url } },
      { type: "text" as const, text: QUESTION },
    ],
  },
];

describe("the openai client through wrangler dev and the real GPU service", () => {
  it("streams the same text the GPU service gives directly, with usage and TwigVLM stats", async () => {
    const expected = await direct();
    expect(expected.completionTokens).toBeGreaterThan(0);
    const params: ChatCompletionCreateParamsStreaming & { twigvlm: { mode: string; retain_budget?: number } } = {
      model,
      messages: userMessage(`data:image/png;base64,${png.toString("base64")}`),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: MAX_TOKENS,
      temperature: 0,
      twigvlm: { mode: "twig", retain_budget: RETAIN },
    };
    const stream = await openai.chat.completions.create(params);
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let stats: Record<string, number> | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
      stats = (chunk as unknown as { twigvlm?: Record<string, number> }).twigvlm ?? stats;
    }
    console.log(`e2e stream: ${chunks} chunks, text ${JSON.stringify(text)}, twigvlm ${JSON.stringify(stats)}`);
    expect(text).toBe(expected.text);
    expect(finish).toMatch(/^(stop|length)$/);
    expect(usage).toEqual({
      prompt_tokens: expected.promptTokens,
      completion_tokens: expected.completionTokens,
      total_tokens: expected.promptTokens + expected.completionTokens,
    });
    expect(stats).toMatchObject({ mode: "twig", visual_tokens: expect.any(Number), verifications: expect.any(Number) });
    expect(stats?.visual_tokens).toBeGreaterThan(0);
    expect(stats?.visual_tokens_kept).toBe(expected.visualTokensKept);
  });

  it("answers the non-stream call with an uploaded image the same way", async () => {
    const expected = await direct();
    const up = await fetch(`${edge.url}/v1/files`, {
      method: "POST",
      headers: { authorization: `Bearer ${edge.secrets.DEV_API_KEY}`, "content-type": "image/png" },
      body: png,
    });
    expect(up.status).toBe(201);
    const { id } = (await up.json()) as { id: string };
    const params: ChatCompletionCreateParamsNonStreaming & { twigvlm: { mode: string; retain_budget?: number } } = {
      model,
      messages: userMessage(id),
      max_completion_tokens: MAX_TOKENS,
      temperature: 0,
      twigvlm: { mode: "twig", retain_budget: RETAIN },
    };
    const res = await openai.chat.completions.create(params).withResponse();
    expect(res.response.headers.get("x-request-id")).toBeTruthy();
    expect(res.response.headers.get("x-ratelimit-limit-requests")).toMatch(/^\d+$/);
    expect(res.data.choices[0].message.content).toBe(expected.text);
    expect(res.data.usage?.completion_tokens).toBe(expected.completionTokens);
  });

  it("passes twigvlm.score_source through: each scorer's answer equals the GPU service's with that scorer", async () => {
    // 88.9% pruned (R-bar = N/9), where the demo model's two scorers keep different tokens for this picture
    const client = createClient(InferenceService, createConnectTransport({ baseUrl: gpu.url, httpVersion: "1.1" }));
    const listed = await client.listModels({}, { headers: { authorization: `Bearer ${SERVICE_TOKEN}` } });
    const retainBudget = Math.round((listed.models.find((m) => m.name === model)?.visualTokens ?? 0) / 9);
    expect(retainBudget).toBeGreaterThan(0);
    const answers: Record<string, string> = {};
    for (const [name, scoreSource] of [
      ["last-token", ScoreSource.LAST_TOKEN],
      ["all-text", ScoreSource.ALL_TEXT],
    ] as const) {
      const expected = await direct({ retainBudget, scoreSource });
      const params: ChatCompletionCreateParamsNonStreaming & {
        twigvlm: { mode: string; retain_budget: number; score_source: string };
      } = {
        model,
        messages: userMessage(`data:image/png;base64,${png.toString("base64")}`),
        max_completion_tokens: MAX_TOKENS,
        temperature: 0,
        twigvlm: { mode: "twig", retain_budget: retainBudget, score_source: name },
      };
      const res = await openai.chat.completions.create(params);
      expect(res.choices[0].message.content, name).toBe(expected.text);
      answers[name] = expected.text;
    }
    expect(Object.keys(answers)).toEqual(["last-token", "all-text"]);
    console.log(`e2e score_source at R-bar ${retainBudget}: ${JSON.stringify(answers)}`);
    // the check above tells the scorers apart only where their answers differ (the demo model's do here)
    expect(answers["last-token"]).not.toBe(answers["all-text"]);
  });

  it("lists the model and refuses a wrong key with the SDK's AuthenticationError", async () => {
    const list = await openai.models.list();
    expect(list.data.map((m) => m.id)).toEqual([model]);
    const wrong = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: `sk-twig-${"x".repeat(43)}`, maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("cancels the GPU service's generation when a streaming client goes away", async () => {
    const requestId = `e2e-leaves-${Date.now()}`;
    proxy.reset();
    pause.pauseAtNextFirstDelta(proxy);
    try {
      const stream = await openai.chat.completions.create(
        {
          model,
          messages: userMessage(`data:image/png;base64,${png.toString("base64")}`),
          stream: true,
          max_tokens: MAX_TOKENS,
          temperature: 0,
        },
        { headers: { "x-request-id": requestId } },
      );
      let received = "";
      for await (const chunk of stream) {
        received += chunk.choices[0]?.delta.content ?? "";
        if (received) break; // leaving the loop aborts the request
      }
      expect(received.length).toBeGreaterThan(0);
      expect(pause.paused).toBe(true);
      // the service is frozen mid-answer: the edge hangs up on it because the client left
      await until(() => (proxy.cancelled === 1 ? true : undefined));
    } finally {
      pause.resume();
    }
    const lines = await until(() => {
      const found = pause.logLines(requestId);
      return found.length > 0 ? found : undefined;
    });
    expect(lines).toEqual([expect.objectContaining({ code: "Canceled", error: "the caller went away" })]);
    expect(lines[0].completionTokens).toBeUndefined();
  });

  it("prints the dev key in the edge's log", () => {
    expect(edge.output()).toContain(edge.secrets.DEV_API_KEY);
  });
});
