/**
 * Per-tenant limits: the edge's chat endpoint in front of this file's own
 * scripted GPU service (model "limits"), with the tenant's TenantLimiter
 * Durable Object (SQLite) deciding.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import { estimatePromptTokens } from "../../edge/src/chat/estimate.js";
import { parseChatRequest } from "../../edge/src/chat/request.js";
import { formatDuration } from "../../edge/src/limits/headers.js";
import type { TenantLimiter } from "../../edge/src/limits/limiter.js";
import { chatBody as anyChatBody, chat, newTenant, readUntil, scriptedState, until } from "./edge-client.js";

const chatBody = (script: string, over: Record<string, unknown> = {}) =>
  anyChatBody(script, { model: "limits", ...over });
const limiterOf = (tenantId: string) => env.LIMITER.get(env.LIMITER.idFromName(tenantId));
const usage = (tenantId: string) => runInDurableObject(limiterOf(tenantId), (o: TenantLimiter) => o.usage());

/** Waits until the tenant's limiter has settled every open request (settling runs after the response). */
const settled = (tenantId: string) =>
  until(async () => {
    const u = await usage(tenantId);
    return u.open === 0 ? u : undefined;
  });

describe("requests per minute", () => {
  it("admits exactly 10 of 50 parallel requests against a limit of 10", async () => {
    const t = await newTenant({ requests_per_minute: 10, tokens_per_minute: 1_000_000, concurrent_streams: 100 });
    const answers = await Promise.all(
      Array.from({ length: 50 }, () => chat(t.key, chatBody("hello", { max_tokens: 8 }))),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40);
    const refused = answers.find((r) => r.status === 429) as Response;
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers.get("retry-after"))).toBeLessThanOrEqual(60);
    expect(refused.headers.get("x-ratelimit-limit-requests")).toBe("10");
    expect(refused.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    expect(refused.headers.get("x-ratelimit-reset-requests")).toMatch(/^(\d+(\.\d)?s|1m0s)$/);
    expect(await refused.json()).toMatchObject({ error: { type: "rate_limit_error", code: "rate_limit_exceeded" } });
    await Promise.all(answers.filter((r) => r !== refused).map((r) => r.text()));
    expect((await settled(t.id)).requests).toBe(10);
  });

  it("counts requests that reuse one x-request-id separately", async () => {
    const t = await newTenant({ requests_per_minute: 2, concurrent_streams: 10 });
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => chat(t.key, chatBody("hello", { max_tokens: 8 }), { "x-request-id": "same" })),
    );
    expect(answers.map((r) => r.status).sort()).toEqual([200, 200, 429, 429]);
    await Promise.all(answers.map((r) => r.text()));
  });

  it("reports remaining requests and tokens on admitted answers", async () => {
    const t = await newTenant({ requests_per_minute: 5, tokens_per_minute: 50_000 });
    const first = await chat(t.key, chatBody("hello", { max_tokens: 100 }));
    expect(first.status).toBe(200);
    expect(first.headers.get("x-ratelimit-limit-requests")).toBe("5");
    expect(first.headers.get("x-ratelimit-remaining-requests")).toBe("4");
    expect(first.headers.get("x-ratelimit-limit-tokens")).toBe("50000");
    const reserved = estimatePromptTokens(parseChatRequest(chatBody("hello", { max_tokens: 100 }), undefined)) + 100;
    expect(first.headers.get("x-ratelimit-remaining-tokens")).toBe(String(50_000 - reserved));
    expect(first.headers.get("x-ratelimit-reset-tokens")).toMatch(/^(\d+ms|\d+(\.\d)?s|\d+m[\d.]+s)$/);
    await first.json();
  });
});

describe("tokens per minute", () => {
  it("reserves prompt tokens plus max_tokens up front and refunds the unused part", async () => {
    const body = chatBody("hello", { max_tokens: 1000 });
    const reserved = estimatePromptTokens(parseChatRequest(body, undefined)) + 1000;
    // Room for one reservation, not two: a second request is admitted only if the first was refunded.
    const t = await newTenant({ tokens_per_minute: reserved + 200, requests_per_minute: 100 });
    const first = await chat(t.key, body);
    expect(first.status).toBe(200);
    const answer = (await first.json()) as { usage: { total_tokens: number } };
    // The scripted service reports 70 prompt + 4 completion tokens: that is what the tenant is charged.
    expect(answer.usage.total_tokens).toBe(74);
    expect(await settled(t.id)).toMatchObject({ requests: 1, tokens: 74 });
    const second = await chat(t.key, body);
    expect(second.status).toBe(200);
    expect(second.headers.get("x-ratelimit-remaining-tokens")).toBe(String(reserved + 200 - 74 - reserved));
    await second.json();
  });

  it("refuses with 429 when the reservation does not fit, and a request larger than the whole limit says so", async () => {
    const body = chatBody("hello", { max_tokens: 1000 });
    const reserved = estimatePromptTokens(parseChatRequest(body, undefined)) + 1000;
    const t = await newTenant({ tokens_per_minute: reserved + 10, requests_per_minute: 100, concurrent_streams: 10 });
    const slow = await chat(t.key, chatBody("slow", { max_tokens: 1000, stream: true }));
    expect(slow.status).toBe(200);
    const refused = await chat(t.key, body);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("x-ratelimit-remaining-tokens")).toBe("10");
    expect(await refused.json()).toMatchObject({
      error: { code: "rate_limit_exceeded", message: expect.stringContaining("tokens per minute") },
    });
    await slow.body?.cancel();
    const huge = await chat(t.key, chatBody("hello", { max_tokens: reserved + 100 }));
    expect(huge.status).toBe(429);
    expect(((await huge.json()) as { error: { message: string } }).error.message).toMatch(/request too large/);
  });

  it("charges a cancelled stream only for what was produced", async () => {
    const t = await newTenant({ requests_per_minute: 100 });
    const res = await chat(t.key, chatBody("slow", { max_tokens: 500, stream: true }));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await readUntil(reader, '"content":"1 "');
    await reader.cancel();
    const u = await settled(t.id);
    const sent = (await scriptedState(inject("scripted").limits)).lastDeltas;
    // 70 prompt tokens from Started plus one per delta the edge received: at least the two the client
    // read, at most what the service sent before it was cancelled (fewer than the 100 of a whole answer)
    expect(sent).toBeLessThan(100);
    expect(u.tokens).toBeGreaterThanOrEqual(72);
    expect(u.tokens).toBeLessThanOrEqual(70 + sent);
  });
});

describe("concurrent streams", () => {
  it("caps open streams per tenant and frees a slot when a stream ends", async () => {
    const t = await newTenant({ concurrent_streams: 2, requests_per_minute: 100 });
    const a = await chat(t.key, chatBody("slow", { stream: true, max_tokens: 200 }));
    const b = await chat(t.key, chatBody("slow", { stream: true, max_tokens: 200 }));
    expect([a.status, b.status]).toEqual([200, 200]);
    const c = await chat(t.key, chatBody("hello", { max_tokens: 8 }));
    expect(c.status).toBe(429);
    expect(c.headers.get("retry-after")).toBe("1");
    expect(await c.json()).toMatchObject({ error: { code: "concurrency_limit_exceeded" } });
    await a.body?.cancel();
    await until(async () => ((await usage(t.id)).open <= 1 ? true : undefined));
    const d = await chat(t.key, chatBody("hello", { max_tokens: 8 }));
    expect(d.status).toBe(200);
    await d.json();
    await b.body?.cancel();
  });
});

describe("the sliding window (the limiter called directly, on a simulated clock)", () => {
  const limits = { requestsPerMinute: 2, tokensPerMinute: 1000, concurrentStreams: 5 };

  it("frees a request slot 60 s after it was taken and says when in Retry-After", async () => {
    const stub = env.LIMITER.get(env.LIMITER.newUniqueId());
    await runInDurableObject(stub, (o: TenantLimiter) => {
      const t0 = 1_000_000;
      expect(o.admit("a", 10, limits, t0).ok).toBe(true);
      expect(o.admit("b", 10, limits, t0 + 20_000).ok).toBe(true);
      const refused = o.admit("c", 10, limits, t0 + 30_000);
      expect(refused).toMatchObject({ ok: false, refusedBy: "requests", retryAfterMs: 30_000 });
      expect(refused.requests).toMatchObject({ remaining: 0, resetMs: 50_000 });
      expect(o.admit("d", 10, limits, t0 + 60_001).ok).toBe(true);
    });
  });

  it("frees tokens as their grants leave the window, and counts settled usage instead of the reservation", async () => {
    const stub = env.LIMITER.get(env.LIMITER.newUniqueId());
    await runInDurableObject(stub, (o: TenantLimiter) => {
      const t0 = 2_000_000;
      expect(o.admit("a", 600, limits, t0).ok).toBe(true);
      const refused = o.admit("b", 600, limits, t0 + 1000);
      expect(refused).toMatchObject({ ok: false, refusedBy: "tokens", retryAfterMs: 59_000 });
      expect(refused.tokens.remaining).toBe(400);
      o.settle("a", 150);
      expect(o.usage(t0 + 2000)).toMatchObject({ requests: 1, tokens: 150, open: 0 });
      expect(o.admit("b", 600, limits, t0 + 2000)).toMatchObject({ ok: true, tokens: { remaining: 250 } });
    });
  });
});

describe("formatDuration", () => {
  it("writes durations the way OpenAI's headers do", () => {
    expect(formatDuration(250)).toBe("250ms");
    expect(formatDuration(1500)).toBe("1.5s");
    expect(formatDuration(60_000)).toBe("1m0s");
    expect(formatDuration(90_500)).toBe("1m30.5s");
  });
});
