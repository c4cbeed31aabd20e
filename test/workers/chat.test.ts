/**
 * POST /v1/chat/completions in front of this file's own scripted GPU service
 * (models "scripted", "scripted-pair", "unreachable"): SSE framing, the
 * non-stream answer, parameters on the wire, request validation, routing and
 * failover, errors after the first token, and cancellation.
 */
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { shardPool } from "../../edge/src/gpu/shard-pool.js";
import {
  chat,
  chatBody,
  dataUrl,
  edge,
  newTenant,
  readUntil,
  resetScripted,
  scriptedState,
  sseData,
  type TestTenant,
  until,
} from "./edge-client.js";

let t: TestTenant;
const scripted = () => inject("scripted").chat;
beforeAll(async () => {
  t = await newTenant({ requests_per_minute: 1000, tokens_per_minute: 10_000_000, concurrent_streams: 50 });
});

interface Chunk {
  id: string;
  object: string;
  model: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: unknown;
  twigvlm?: Record<string, unknown>;
}

describe("streaming (SSE)", () => {
  it("frames chat.completion.chunk events, the final chunk with TwigVLM stats, usage, then [DONE]", async () => {
    const res = await chat(t.key, chatBody("hello", { stream: true, stream_options: { include_usage: true } }), {
      "x-request-id": "req-abc.1",
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("x-request-id")).toBe("req-abc.1");
    expect(res.headers.get("x-ratelimit-remaining-requests")).toMatch(/^\d+$/);
    const data = sseData(await res.text());
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    // role, three deltas, the finish, the usage
    expect(chunks).toHaveLength(6);
    for (const c of chunks) {
      expect(c).toMatchObject({ id: "chatcmpl-req-abc.1", object: "chat.completion.chunk", model: "scripted" });
    }
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    expect(text).toBe("Hello world");
    const final = chunks.at(-2) as Chunk;
    expect(final.choices[0]).toMatchObject({ finish_reason: "stop", delta: {} });
    expect(final.twigvlm).toMatchObject({
      mode: "twig",
      visual_tokens: 64,
      visual_tokens_kept: 3,
      drafted_tokens: 4,
      accepted_tokens: 2,
      acceptance_rate: 0.5,
      accepted_length_histogram: [1, 0, 1],
    });
    // With include_usage every chunk has usage: null, and one last chunk has no choices and the usage.
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.at(-1)).toMatchObject({
      choices: [],
      usage: { prompt_tokens: 70, completion_tokens: 4, total_tokens: 74 },
    });
  });

  it("leaves out the usage chunk and field unless asked", async () => {
    const data = sseData(await (await chat(t.key, chatBody("hello", { stream: true }))).text());
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as Chunk);
    expect(chunks.every((c) => !("usage" in c))).toBe(true);
    expect(chunks.at(-1)?.choices[0].finish_reason).toBe("stop");
  });

  it("ends with an error event, not [DONE] and not a silent cut, when the GPU service fails after the first token", async () => {
    const res = await chat(t.key, chatBody("fail-after-first", { stream: true }));
    expect(res.status).toBe(200);
    const data = sseData(await res.text());
    expect(data).not.toContain("[DONE]");
    expect(JSON.parse(data[1]).choices[0].delta.content).toBe("partial");
    const last = JSON.parse(data.at(-1) as string);
    expect(last).toMatchObject({
      error: { type: "server_error", code: "gpu_error", message: expect.stringMatching(/failed after it started/) },
    });
    // the GPU service's own words stay in the edge's log; the client gets the request id to quote
    expect(last.error.message).not.toContain("engine crashed");
    expect(last.error.message).toContain(`request id ${res.headers.get("x-request-id")}`);
  });

  it("cancels the GPU service's stream when the client goes away", async () => {
    await resetScripted(scripted());
    const res = await chat(t.key, chatBody("slow", { stream: true, max_tokens: 500 }));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await readUntil(reader, '"content":"0 "');
    await reader.cancel();
    // the scripted stream would run for 10 s unless cancelled
    const seen = await until(async () => {
      const s = await scriptedState(scripted());
      return s.cancelled > 0 ? s : undefined;
    });
    expect(seen).toMatchObject({ calls: 1, cancelled: 1 });
  });
});

describe("non-streaming", () => {
  it("answers one chat.completion with usage and the TwigVLM stats", async () => {
    const res = await chat(t.key, chatBody("hello"));
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(await res.json()).toMatchObject({
      object: "chat.completion",
      model: "scripted",
      choices: [{ index: 0, message: { role: "assistant", content: "Hello world" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 70, completion_tokens: 4, total_tokens: 74 },
      twigvlm: { mode: "twig", visual_tokens_kept: 3, tokens_per_second: 250 },
    });
  });

  it("answers an error after the first token as a 500 in OpenAI's shape, without the GPU service's internals", async () => {
    const res = await chat(t.key, chatBody("fail-after-first"));
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("server_error");
    expect(body.error.message).not.toContain("engine crashed");
    expect(body.error.message).toContain(`request id ${res.headers.get("x-request-id")}`);
  });

  it("passes the sampling parameters, the TwigVLM extension and the service token to the GPU service", async () => {
    const res = await chat(
      t.key,
      chatBody("echo", {
        max_completion_tokens: 33,
        max_tokens: 99,
        temperature: 0.5,
        top_p: 0.9,
        seed: 42,
        stop: ["\n", "END"],
        twigvlm: { mode: "fastv", retain_budget: 40, draft_length: 3, draft_threshold: 0.5, score_source: "all-text" },
      }),
      { "x-request-id": "echo-1" },
    );
    expect(res.status).toBe(200);
    await res.json();
    const seen = await scriptedState(scripted());
    expect(seen.lastAuthorization).toBe("Bearer test-gpu-token");
    expect(seen.lastRequest).toMatchObject({
      model: "scripted",
      requestId: "echo-1",
      tenantId: t.id,
      conversation: { messages: [{ role: "user", content: "echo" }] },
      sampling: { maxTokens: 33, temperature: 0.5, topP: expect.closeTo(0.9, 6), seed: "42", stop: ["\n", "END"] },
      acceleration: {
        mode: "MODE_FASTV",
        retainBudget: 40,
        draftLength: 3,
        draftThreshold: 0.5,
        scoreSource: "SCORE_SOURCE_ALL_TEXT",
      },
    });
    // no score_source: the model's default (proto3 JSON leaves the zero value out)
    await (await chat(t.key, chatBody("echo", { twigvlm: { mode: "ttp-only" } }))).json();
    const plain = (await scriptedState(scripted())).lastRequest as { acceleration: Record<string, unknown> };
    expect(plain.acceleration.mode).toBe("MODE_TTP_ONLY");
    expect(plain.acceleration.scoreSource).toBeUndefined();
    expect(plain.acceleration.prunedFraction).toBeUndefined();
    // a pruned fraction in place of a budget
    await (await chat(t.key, chatBody("echo", { twigvlm: { mode: "ttp-only", pruned_fraction: 0.778 } }))).json();
    const fraction = (await scriptedState(scripted())).lastRequest as { acceleration: Record<string, unknown> };
    expect(fraction.acceleration).toMatchObject({ mode: "MODE_TTP_ONLY", prunedFraction: 0.778 });
    expect(fraction.acceleration.retainBudget).toBeUndefined();
    expect(seen.lastImageBytes).toBe(64);
  });
});

describe("request validation", () => {
  const bad = async (body: unknown, param: string) => {
    const res = await chat(t.key, body);
    expect(res.status).toBe(400);
    const err = ((await res.json()) as { error: { param: string; type: string } }).error;
    expect(err).toMatchObject({ param, type: "invalid_request_error" });
  };

  it("refuses n other than 1", async () => {
    await bad(chatBody("hello", { n: 2 }), "n");
    expect((await chat(t.key, chatBody("hello", { n: 1 }))).status).toBe(200);
  });

  it("names the bad field", async () => {
    await bad({ model: "scripted", messages: [{ role: "user", content: "no image" }] }, "messages");
    await bad(chatBody("hello", { temperature: 3 }), "temperature");
    await bad(chatBody("hello", { top_p: -0.1 }), "top_p");
    await bad(chatBody("hello", { max_tokens: 0 }), "max_tokens");
    await bad(chatBody("hello", { stop: ["a", "b", "c", "d", "e"] }), "stop");
    await bad(chatBody("hello", { twigvlm: { mode: "warp" } }), "twigvlm.mode");
    await bad(chatBody("hello", { twigvlm: { retain_budget: 1.5 } }), "twigvlm.retain_budget");
    for (const f of [0, 1, -0.2, 2, "0.5"])
      await bad(chatBody("hello", { twigvlm: { pruned_fraction: f } }), "twigvlm.pruned_fraction");
    await bad(chatBody("hello", { twigvlm: { retain_budget: 16, pruned_fraction: 0.5 } }), "twigvlm.pruned_fraction");
    await bad(chatBody("hello", { twigvlm: { mode: "constructor" } }), "twigvlm.mode");
    await bad(chatBody("hello", { twigvlm: { score_source: "first-token" } }), "twigvlm.score_source");
    await bad(chatBody("hello", { twigvlm: { score_source: "toString" } }), "twigvlm.score_source");
    await bad(chatBody("hello", { twigvlm: { score_source: 2 } }), "twigvlm.score_source");
    await bad({ model: "scripted", messages: [] }, "messages");
    await bad(
      { ...chatBody("hello"), messages: [...chatBody("x").messages, { role: "robot", content: "x" }] },
      "messages[1].role",
    );
  });

  it("refuses remote image URLs and bad data: URLs, and takes GIF as OpenAI does", async () => {
    await bad(chatBody("hello", {}, "https://example.com/cat.png"), "image_url.url");
    await bad(chatBody("hello", {}, "data:image/png;base64,@@@"), "image_url.url");
    await bad(chatBody("hello", {}, "data:image/png;base64,"), "image_url.url");
    const text = await chat(t.key, chatBody("hello", {}, `data:image/png;base64,${btoa("not an image at all")}`));
    expect(text.status).toBe(415);
    expect(await text.json()).toMatchObject({ error: { message: expect.stringContaining("PNG, JPEG, WebP or GIF") } });
    // GIF87a and GIF89a reach the GPU service as image/gif (it reads an animated GIF's first frame)
    const magics = ["GIF87a", "GIF89a"];
    let gifs = 0;
    for (const magic of magics) {
      const gif = new TextEncoder().encode(`${magic}\x01\x00\x01\x00\x00\x00\x00;`);
      const res = await chat(t.key, chatBody("echo", {}, dataUrl(gif, "image/gif")));
      expect(res.status).toBe(200);
      await res.json();
      expect(await scriptedState(scripted())).toMatchObject({
        lastImageBytes: gif.length,
        lastImageMediaType: "image/gif",
      });
      gifs++;
    }
    expect(gifs).toBe(magics.length);
  });

  it("answers 404 for an unknown model and passes the GPU service's INVALID_ARGUMENT on as a 400", async () => {
    const unknown = await chat(t.key, chatBody("hello", { model: "gpt-4o" }));
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "model_not_found" } });
    const invalid = await chat(t.key, chatBody("invalid"));
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: { message: string } }).error.message).toMatch(/context length/);
  });

  it("answers unknown routes with a 404 in OpenAI's shape", async () => {
    const res = await edge("/v1/nothing", { headers: { authorization: `Bearer ${t.key}` } });
    expect(res.status).toBe(404);
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(await res.json()).toMatchObject({ error: { type: "not_found_error" } });
  });
});

describe("routing to GPU shards", () => {
  it("fails over past a shard that refuses the connection", async () => {
    shardPool.reset();
    await resetScripted(scripted());
    for (let i = 0; i < 3; i++) {
      const res = await chat(t.key, chatBody("hello"));
      expect(res.status).toBe(200);
      expect(((await res.json()) as { choices: { message: { content: string } }[] }).choices[0].message.content).toBe(
        "Hello world",
      );
    }
    expect((await scriptedState(scripted())).calls).toBe(3);
  });

  it("fails over past a shard that answers UNAVAILABLE before the first token", async () => {
    const before = (await scriptedState(inject("drainingUrl"))).calls;
    const calls = (await scriptedState(scripted())).calls;
    for (let i = 0; i < 2; i++) {
      const res = await chat(t.key, chatBody("hello", { model: "scripted-pair" }));
      expect(res.status).toBe(200);
      await res.json();
    }
    expect((await scriptedState(scripted())).calls).toBe(calls + 2);
    // The draining shard was asked at least once (the order rotates), and every such attempt fell over to the other.
    expect((await scriptedState(inject("drainingUrl"))).calls).toBeGreaterThan(before);
  });

  it("answers 503 with Retry-After when no shard of the model is reachable, and refunds the tenant", async () => {
    const u = await newTenant({ requests_per_minute: 100 });
    const res = await chat(u.key, chatBody("hello", { model: "unreachable" }));
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    expect(await res.json()).toMatchObject({
      error: {
        type: "service_unavailable_error",
        code: "gpu_unavailable",
        message: expect.stringContaining("unreachable"),
      },
    });
    const limiter = env.LIMITER.get(env.LIMITER.idFromName(u.id));
    const usage = await until(async () => {
      const now = await limiter.usage();
      return now.open === 0 ? now : undefined;
    });
    expect(usage).toMatchObject({ requests: 1, tokens: 0, open: 0 });
  });
});
