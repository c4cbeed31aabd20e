/**
 * Load: 130 streaming chat completions sent at once through the real edge
 * (`wrangler dev`) to two real GPU service processes serving the demo model,
 * from three tenants with different limits. 100 are admitted and stream at the
 * same time; every one's text must equal the GPU service's direct greedy answer
 * to the same request, and each tenant's admissions must match its limits
 * exactly:
 *
 *   open      40 sent, generous limits            -> 40 admitted
 *   narrow    45 sent, 30 concurrent streams      -> 30 admitted, 15 refused (concurrency_limit_exceeded)
 *   metered   45 sent, 30 requests per minute     -> 30 admitted, 15 refused (rate_limit_exceeded),
 *                                                   their x-ratelimit-remaining-requests 29, 28, ..., 0
 *
 * A concurrency limit is exact only while no admitted stream ends, so both GPU
 * services are paused (SIGSTOP) while the burst is admitted and resumed
 * (SIGCONT) once every refusal has arrived: admissions are decided by the
 * tenants' Durable Objects alone, then the 100 streams run. Time to first
 * token is counted from the resume. The figures (TTFT, inter-chunk latency,
 * throughput) are printed, not asserted.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newTenant } from "../support/demo-stack.js";
import { type EdgeDevProcess, startEdgeDev } from "../support/edge-dev.js";
import { demoModelDir, type GpuServiceProcess, repoRoot, startGpuService } from "../support/gpu-service.js";
import { type ChatStreamResult, quantile, streamChat } from "../support/sse-client.js";

const ADMIN_TOKEN = "load-admin-token";
const SERVICE_TOKEN = "load-service-token";
const MAX_TOKENS = 32;

interface Case {
  image: Buffer;
  question: string;
}

/** Five held-out scenes, each with its first short question and a description: ten distinct requests. */
function cases(): Case[] {
  const lines = readFileSync(join(repoRoot, "training/data/test.jsonl"), "utf8").trim().split("\n").slice(0, 5);
  return lines.flatMap((line) => {
    const scene = JSON.parse(line);
    const image = readFileSync(join(repoRoot, "training/data", scene.image));
    return [
      { image, question: scene.questions[0].question },
      { image, question: scene.describe.prompt },
    ];
  });
}

const chatBody = (c: Case) => ({
  model: "demo",
  max_tokens: MAX_TOKENS,
  temperature: 0,
  messages: [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: `data:image/png;base64,${c.image.toString("base64")}` } },
        { type: "text", text: c.question },
      ],
    },
  ],
});

/** The GPU service's own greedy answer to a case (Connect, no edge). */
async function directAnswer(gpu: GpuServiceProcess, c: Case): Promise<string> {
  const client = createClient(InferenceService, createConnectTransport({ baseUrl: gpu.url, httpVersion: "1.1" }));
  let text = "";
  for await (const ev of client.generate(
    {
      model: "demo",
      image: { source: { case: "data", value: c.image } },
      input: { case: "conversation", value: { messages: [{ role: "user", content: c.question }] } },
      sampling: { maxTokens: MAX_TOKENS, temperature: 0, topP: 1 },
      acceleration: { mode: Mode.TWIG },
    },
    { headers: { authorization: `Bearer ${SERVICE_TOKEN}` } },
  ))
    if (ev.event.case === "delta") text += ev.event.value.text;
  return text;
}

let shards: GpuServiceProcess[] = [];
let edge: EdgeDevProcess;
let tenants: Record<"open" | "narrow" | "metered", { id: string; key: string }>;
let all: Case[];
let expected: string[];

beforeAll(async () => {
  const env = {
    TWIG_MODELS_DIR: dirname(demoModelDir),
    TWIG_DEFAULT_MODEL: "demo",
    TWIG_ENGINE_THREADS: "1",
    TWIG_MAX_QUEUE: "128",
    TWIG_SERVICE_TOKEN: SERVICE_TOKEN,
  };
  shards = await Promise.all([startGpuService(0, env), startGpuService(0, env)]);
  edge = await startEdgeDev({
    GPU_SERVICE_URL: shards[0].url,
    MODEL_ROUTES: JSON.stringify({ demo: shards.map((s) => s.url) }),
    GPU_SERVICE_TOKEN: SERVICE_TOKEN,
    ADMIN_TOKEN,
  });
  const big = { requests_per_minute: 1000, tokens_per_minute: 10_000_000 };
  tenants = {
    open: await newTenant({ edge, adminToken: ADMIN_TOKEN }, { name: "open", ...big, concurrent_streams: 64 }),
    narrow: await newTenant({ edge, adminToken: ADMIN_TOKEN }, { name: "narrow", ...big, concurrent_streams: 30 }),
    metered: await newTenant(
      { edge, adminToken: ADMIN_TOKEN },
      { name: "metered", requests_per_minute: 30, tokens_per_minute: 10_000_000, concurrent_streams: 64 },
    ),
  };
  all = cases();
  expected = [];
  for (const c of all) expected.push(await directAnswer(shards[0], c));
}, 240_000);

afterAll(async () => {
  for (const s of shards) if (s.child.exitCode === null) s.child.kill("SIGCONT");
  await edge?.stop();
  await Promise.all(shards.map((s) => s.stop()));
});

const ms = (x: number) => (Number.isNaN(x) ? "-" : x.toFixed(1));

describe("100 concurrent streams through the edge to two GPU services, three tenants", () => {
  it("streams every admitted request's direct answer and holds each tenant's limits exactly", async () => {
    const plan: { tenant: keyof typeof tenants; caseIndex: number }[] = [];
    const sends = { open: 40, narrow: 45, metered: 45 };
    for (const [name, n] of Object.entries(sends))
      for (let i = 0; i < n; i++) plan.push({ tenant: name as keyof typeof tenants, caseIndex: i % all.length });
    // interleave the tenants so that none is served first
    plan.sort((a, b) => a.caseIndex - b.caseIndex || a.tenant.localeCompare(b.tenant));

    for (const s of shards) s.child.kill("SIGSTOP");
    let resumedAt = 0;
    let refused = 0;
    const resume = () => {
      if (resumedAt) return;
      resumedAt = performance.now();
      for (const s of shards) s.child.kill("SIGCONT");
    };
    const startedAt = performance.now();
    const pending = plan.map((p, i) =>
      streamChat(edge.url, tenants[p.tenant].key, chatBody(all[p.caseIndex]), { requestId: `load-${i}` }).then((r) => {
        if (r.status !== 200 && ++refused === 30) resume();
        return r;
      }),
    );
    // every refusal arrives while the GPU services are paused; should one not, resume anyway after a while
    const safety = setTimeout(resume, 60_000);
    const results: ChatStreamResult[] = await Promise.all(pending);
    clearTimeout(safety);
    resume();
    const endedAt = Math.max(...results.map((r) => r.endAt));

    const byTenant = (name: keyof typeof tenants) => results.filter((_, i) => plan[i].tenant === name);
    const admitted = (rs: ChatStreamResult[]) => rs.filter((r) => r.status === 200);
    const refusedWith = (rs: ChatStreamResult[], code: string) =>
      rs.filter((r) => r.status === 429 && r.errorBody?.error?.code === code).length;
    const counts = Object.fromEntries(
      (Object.keys(tenants) as (keyof typeof tenants)[]).map((n) => [
        n,
        { sent: byTenant(n).length, admitted: admitted(byTenant(n)).length },
      ]),
    );
    console.log(`admissions per tenant: ${JSON.stringify(counts)}`);

    // the limits, exactly
    expect(admitted(byTenant("open"))).toHaveLength(40);
    expect(admitted(byTenant("narrow"))).toHaveLength(30);
    expect(refusedWith(byTenant("narrow"), "concurrency_limit_exceeded")).toBe(15);
    expect(admitted(byTenant("metered"))).toHaveLength(30);
    expect(refusedWith(byTenant("metered"), "rate_limit_exceeded")).toBe(15);
    const remaining = admitted(byTenant("metered")).map((r) => Number(r.headers.get("x-ratelimit-remaining-requests")));
    expect(remaining.sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    for (const r of results.filter((x) => x.status === 429))
      expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);

    // every admitted stream completed with the direct answer to its own request
    let compared = 0;
    for (const [i, r] of results.entries()) {
      if (r.status !== 200) continue;
      expect(r.failure, `stream ${i}`).toBeUndefined();
      expect(r.error, `stream ${i}`).toBeUndefined();
      expect(r.done, `stream ${i} ended with [DONE]`).toBe(true);
      expect(r.text, `stream ${i} (case ${plan[i].caseIndex})`).toBe(expected[plan[i].caseIndex]);
      compared++;
    }
    expect(compared).toBe(100);

    const streams = results.filter((r) => r.status === 200);
    const ttft = streams.map((r) => r.chunkAt[0] - Math.max(r.sentAt, resumedAt));
    const gaps = streams.flatMap((r) => r.chunkAt.slice(1).map((t, k) => t - r.chunkAt[k]));
    const tokens = streams.reduce((n, r) => n + (r.completionTokens ?? 0), 0);
    const seconds = (endedAt - resumedAt) / 1000;
    console.log(
      [
        "",
        `100 streams of the demo model (greedy, up to ${MAX_TOKENS} tokens, twig mode) through wrangler dev, 2 GPU services x 1 engine worker, 1 thread each`,
        `admission of 130 requests while the GPU services were paused: ${ms(resumedAt - startedAt)} ms`,
        "| measure | p50 | p99 | max |",
        "|---|---|---|---|",
        `| time to first token from resume, ms | ${ms(quantile(ttft, 0.5))} | ${ms(quantile(ttft, 0.99))} | ${ms(Math.max(...ttft))} |`,
        `| time between content chunks, ms (${gaps.length} gaps) | ${ms(quantile(gaps, 0.5))} | ${ms(quantile(gaps, 0.99))} | ${ms(Math.max(...gaps))} |`,
        `throughput: ${tokens} completion tokens in ${seconds.toFixed(2)} s = ${(tokens / seconds).toFixed(1)} tokens/s; ${(100 / seconds).toFixed(1)} streams/s`,
      ].join("\n"),
    );
  }, 300_000);
});
