/**
 * End to end: the real GPU service (on a model directory) behind the real edge
 * under `wrangler dev`, both on loopback. The official `openai` client, with
 * the dev key, streams a chat completion with an image and gets exactly the
 * text the GPU service gives when called directly with the same parameters
 * (greedy); the non-stream call with an uploaded image does too. The edge
 * authenticates to the GPU service with its service token. A scripted GPU
 * service (test/support/scripted-gpu-service.ts), routed as the model
 * "scripted", streams slowly enough to see the edge cancel the upstream call
 * when the client goes away.
 *
 * The model is the trained demo model (models/demo); TWIG_E2E_MODEL_DIR selects
 * another model directory. Without either, a fresh tiny random model is served.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
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
import { writeTinyModel } from "../../../gpu-service/src/engine/tiny-model.js";
import { devApiKey, type EdgeDevProcess, startEdgeDev } from "../../support/edge-dev.js";
import { demoModelDir, type GpuServiceProcess, startGpuService } from "../../support/gpu-service.js";
import { type ScriptedGpuService, startScriptedGpuService } from "../../support/scripted-gpu-service.js";

/** 0: the system picks a free port (a fixed one inside the ephemeral range once collided). */
const GPU_PORT = 0;
const EDGE_PORT = 27150;
const SCRIPTED_PORT = 27145;
const SERVICE_TOKEN = "e2e-service-token";
const QUESTION = "describe the picture .";
const MAX_TOKENS = 40;

let modelsDir: string;
let model: string;
let scratch: string | undefined;
let gpu: GpuServiceProcess;
let edge: EdgeDevProcess;
let scripted: ScriptedGpuService;
let png: Buffer;
let retain: number | undefined;
let openai: OpenAI;

beforeAll(async () => {
  const chosen = process.env.TWIG_E2E_MODEL_DIR ?? (existsSync(join(demoModelDir, "config.json")) ? demoModelDir : "");
  if (chosen) {
    const dir = resolve(chosen);
    modelsDir = dirname(dir);
    model = basename(dir);
  } else {
    scratch = mkdtempSync(join(tmpdir(), "twigserve-e2e-"));
    modelsDir = scratch;
    model = "tiny";
    writeTinyModel(join(scratch, model), 0, "hf");
  }
  // a held-out scene of the demo model's world, described at a third of its visual tokens (R-bar 48
  // of 144, where the demo model still describes; the default budget prunes 88.9%)
  png = readFileSync(resolve(demoModelDir, "../../training/data/test/0000.png"));
  retain = chosen ? 48 : undefined;
  gpu = await startGpuService(GPU_PORT, {
    TWIG_MODELS_DIR: modelsDir,
    TWIG_DEFAULT_MODEL: model,
    TWIG_ENGINE_THREADS: "1",
    TWIG_SERVICE_TOKEN: SERVICE_TOKEN,
  });
  scripted = await startScriptedGpuService(SCRIPTED_PORT);
  edge = await startEdgeDev(EDGE_PORT, {
    GPU_SERVICE_URL: gpu.url,
    MODEL_ROUTES: JSON.stringify({ [model]: [gpu.url], scripted: [scripted.url] }),
    GPU_SERVICE_TOKEN: SERVICE_TOKEN,
  });
  openai = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: devApiKey(), maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await edge?.stop();
  await scripted?.close();
  await gpu?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
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
    acceleration: { mode: Mode.TWIG, retainBudget: retain ?? 0, ...acceleration },
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
      twigvlm: { mode: "twig", retain_budget: retain },
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
      headers: { authorization: `Bearer ${devApiKey()}`, "content-type": "image/png" },
      body: png,
    });
    expect(up.status).toBe(201);
    const { id } = (await up.json()) as { id: string };
    const params: ChatCompletionCreateParamsNonStreaming & { twigvlm: { mode: string; retain_budget?: number } } = {
      model,
      messages: userMessage(id),
      max_completion_tokens: MAX_TOKENS,
      temperature: 0,
      twigvlm: { mode: "twig", retain_budget: retain },
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
    console.log(`e2e score_source at R-bar ${retainBudget}: ${JSON.stringify(answers)}`);
    // the check above tells the scorers apart only where their answers differ (the demo model's do here)
    if (model !== "tiny") expect(answers["last-token"]).not.toBe(answers["all-text"]);
  });

  it("lists the model and refuses a wrong key with the SDK's AuthenticationError", async () => {
    const list = await openai.models.list();
    expect(list.data.map((m) => m.id)).toEqual([model, "scripted"]);
    const wrong = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: `sk-twig-${"x".repeat(43)}`, maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("cancels the GPU service's stream when the client goes away", async () => {
    const stream = await openai.chat.completions.create({
      model: "scripted",
      messages: userMessage(`data:image/png;base64,${png.toString("base64")}`).map((m) => ({
        ...m,
        content: [m.content[0], { type: "text" as const, text: "slow" }],
      })),
      stream: true,
    });
    let received = "";
    for await (const chunk of stream) {
      received += chunk.choices[0]?.delta.content ?? "";
      if (received.includes("1 ")) break; // leaving the loop aborts the request
    }
    expect(scripted.state.calls).toBe(1);
    for (let i = 0; i < 100 && scripted.state.cancelled === 0; i++) await new Promise((r) => setTimeout(r, 20));
    // The scripted stream would run for 10 s; it was cancelled right after the client left.
    expect(scripted.state.cancelled).toBe(1);
  });

  it("makes the SDK raise an APIError when the stream fails after its first token", async () => {
    const stream = await openai.chat.completions.create({
      model: "scripted",
      messages: userMessage(`data:image/png;base64,${png.toString("base64")}`).map((m) => ({
        ...m,
        content: [m.content[0], { type: "text" as const, text: "fail-after-first" }],
      })),
      stream: true,
    });
    let received = "";
    const consume = async () => {
      for await (const chunk of stream) received += chunk.choices[0]?.delta.content ?? "";
    };
    await expect(consume()).rejects.toThrow(/engine crashed/);
    expect(received).toBe("partial");
  });

  it("prints the dev key in the edge's log", () => {
    expect(edge.output()).toContain(devApiKey());
  });
});
