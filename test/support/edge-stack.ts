/**
 * The whole serving path for an end-to-end test of the edge, on loopback ports
 * the system picks: the real GPU service on the demo model (test/support/
 * edge-models.ts), a pass-through frame proxy in front of it that can freeze
 * it at an answer's first delta (gpu-pause.ts), and the real edge under
 * `wrangler dev` with its own generated secrets (edge-dev.ts). Plus what such
 * tests keep needing: the GPU service's own answer to a request (called
 * directly, the reference the edge's answers are held to), the admin API, and
 * waiting for a condition without a clock.
 */
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { type EdgeDevProcess, startEdgeDev } from "./edge-dev.js";
import { type EdgeModels, edgeModelsDir } from "./edge-models.js";
import { type FrameProxy, startFrameProxy } from "./frame-proxy.js";
import { GpuPause } from "./gpu-pause.js";
import { type GpuServiceProcess, startGpuService } from "./gpu-service.js";

export interface EdgeStack {
  models: EdgeModels;
  gpu: GpuServiceProcess;
  proxy: FrameProxy;
  pause: GpuPause;
  edge: EdgeDevProcess;
  stop(): Promise<void>;
}

export interface EdgeStackOptions {
  /** Other names the demo model is also served under (for routes of their own). */
  aliases?: string[];
  /** MODEL_ROUTES, given the proxy's and the GPU service's URLs; default: the model through the proxy. */
  routes?: (urls: { proxy: string; gpu: string }) => Record<string, string[]>;
  /** More variables for the edge. */
  vars?: Record<string, string>;
  /** Environment of the GPU service. */
  gpuEnv?: Record<string, string>;
}

/** Starts the GPU service, the proxy and `wrangler dev`, and waits until /healthz says ok. */
export async function startEdgeStack(opts: EdgeStackOptions = {}): Promise<EdgeStack> {
  const models = edgeModelsDir({ aliases: opts.aliases });
  const gpu = await startGpuService(0, {
    TWIG_MODELS_DIR: models.dir,
    TWIG_DEFAULT_MODEL: models.model,
    TWIG_ENGINE_THREADS: "1",
    ...opts.gpuEnv,
  });
  const proxy = await startFrameProxy(gpu.url);
  const pause = new GpuPause(gpu);
  const routes = opts.routes?.({ proxy: proxy.url, gpu: gpu.url }) ?? { [models.model]: [proxy.url] };
  const edge = await startEdgeDev(
    { GPU_SERVICE_URL: gpu.url, MODEL_ROUTES: JSON.stringify(routes), ...opts.vars },
    { ready: (res) => res.status === 200 },
  );
  return {
    models,
    gpu,
    proxy,
    pause,
    edge,
    stop: async () => {
      pause.resume();
      await edge.stop();
      await proxy.close();
      await gpu.stop();
      models.remove();
    },
  };
}

/** Waits until `check` returns a value that is not undefined (bounded only by the test's timeout). */
export async function until<T>(check: () => Promise<T | undefined> | T | undefined, pauseMs = 20): Promise<T> {
  while (true) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

/** What the GPU service answers when called directly (Connect): greedy, in twig mode. */
export async function directAnswer(
  gpu: GpuServiceProcess,
  req: { model: string; image: Uint8Array; question: string; maxTokens: number; retainBudget?: number; token?: string },
): Promise<{ text: string; completionTokens: number }> {
  const client = createClient(InferenceService, createConnectTransport({ baseUrl: gpu.url, httpVersion: "1.1" }));
  const request = create(GenerateRequestSchema, {
    model: req.model,
    image: { source: { case: "data", value: req.image } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: req.question }] } },
    sampling: { maxTokens: req.maxTokens, temperature: 0, topP: 1 },
    acceleration: { mode: Mode.TWIG, retainBudget: req.retainBudget ?? 0 },
  });
  let text = "";
  let completionTokens = -1;
  const headers = req.token ? { authorization: `Bearer ${req.token}` } : undefined;
  for await (const ev of client.generate(request, { headers })) {
    if (ev.event.case === "delta") text += ev.event.value.text;
    if (ev.event.case === "finished") completionTokens = ev.event.value.usage?.completionTokens ?? -1;
  }
  return { text, completionTokens };
}

/** A chat completions body with one image (a data: URL or a file id) and a question, greedy. */
export function chatBody(model: string, image: string, question: string, over: Record<string, unknown> = {}) {
  return {
    model,
    temperature: 0,
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: image } },
          { type: "text", text: question },
        ],
      },
    ],
    ...over,
  };
}

export const dataUrl = (bytes: Uint8Array, type = "image/png") =>
  `data:${type};base64,${Buffer.from(bytes).toString("base64")}`;

/** Creates a tenant with `settings` and a key for it through the edge's admin API. */
export async function newTenant(
  edge: EdgeDevProcess,
  settings: Record<string, unknown> = {},
): Promise<{ id: string; key: string }> {
  const admin = { authorization: `Bearer ${edge.secrets.ADMIN_TOKEN}`, "content-type": "application/json" };
  const t = await fetch(`${edge.url}/admin/tenants`, {
    method: "POST",
    headers: admin,
    body: JSON.stringify({ name: "test", ...settings }),
  });
  if (t.status !== 201) throw new Error(`creating a tenant failed: ${t.status} ${await t.text()}`);
  const { id } = (await t.json()) as { id: string };
  const k = await fetch(`${edge.url}/admin/tenants/${id}/keys`, { method: "POST", headers: admin });
  if (k.status !== 201) throw new Error(`issuing a key failed: ${k.status} ${await k.text()}`);
  return { id, key: ((await k.json()) as { key: string }).key };
}
