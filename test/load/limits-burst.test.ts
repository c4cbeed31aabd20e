/**
 * Each tenant limit under a burst five times its size, sent at once through
 * the real edge (`wrangler dev`): the tenant's Durable Object admits exactly
 * the limit, every refusal is a 429 with Retry-After and the right code, and
 * the admitted answers' x-ratelimit-remaining-* headers count down exactly
 * once per admission. The scripted GPU service answers ("hello" at once, "slow"
 * for 10 s unless cancelled) so that only the edge is measured; slow streams
 * hold their concurrency slot and their token reservation for the whole burst.
 */

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { estimatePromptTokens } from "../../edge/src/chat/estimate.js";
import type { ChatRequest } from "../../edge/src/chat/request.js";
import { newTenant } from "../support/demo-stack.js";
import { type EdgeDevProcess, startEdgeDev } from "../support/edge-dev.js";
import { type ScriptedGpuService, startScriptedGpuService } from "../support/scripted-gpu-service.js";
import { type ChatStreamResult, streamChat } from "../support/sse-client.js";

const ADMIN_TOKEN = "burst-admin-token";
const MAX_TOKENS = 100;
/** A 1x1 PNG: the scripted service ignores the image, the edge checks its type. */
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

let scripted: ScriptedGpuService;
let edge: EdgeDevProcess;

const body = (script: string) => ({
  model: "scripted",
  max_tokens: MAX_TOKENS,
  temperature: 0,
  messages: [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: `data:image/png;base64,${PNG}` } },
        { type: "text", text: script },
      ],
    },
  ],
});

/** What the edge reserves for one request of `script`: its prompt estimate plus max_tokens. */
const reservation = (script: string) =>
  estimatePromptTokens({
    messages: [{ role: "user", content: script }],
    media: { kind: "image", url: `data:image/png;base64,${PNG}` },
  } as ChatRequest) + MAX_TOKENS;

beforeAll(async () => {
  scripted = await startScriptedGpuService();
  edge = await startEdgeDev({
    GPU_SERVICE_URL: scripted.url,
    MODEL_ROUTES: JSON.stringify({ scripted: [scripted.url] }),
    ADMIN_TOKEN,
  });
}, 180_000);

afterAll(async () => {
  await edge?.stop();
  await scripted?.close();
});

/**
 * Sends `n` requests at once. `settle()` waits until every one is decided: refused ones have their
 * whole answer; admitted ones of the "slow" script (which would stream for 10 s) their first content,
 * then it ends those streams (the client goes away); admitted ones of any other script their whole
 * answer (ending them at their first chunk would cut the answer short). It returns every result.
 */
function burst(key: string, n: number, script: string) {
  const holdsOpen = script === "slow";
  const controllers = Array.from({ length: n }, () => new AbortController());
  const status: number[] = [];
  const streaming = new Set<number>();
  const ended = new Set<number>();
  const results = Promise.all(
    controllers.map((ac, i) =>
      streamChat(edge.url, key, body(script), {
        requestId: `burst-${script}-${i}`,
        signal: ac.signal,
        onAnswer: (s) => {
          status[i] = s;
        },
        onChunk: () => streaming.add(i),
      }).finally(() => ended.add(i)),
    ),
  );
  // (aborting a fetch between its headers and its body can leave the body pending forever: wait for both)
  const decided = () =>
    controllers.every((_, i) => ended.has(i) || (holdsOpen && status[i] === 200 && streaming.has(i)));
  return {
    async settle(): Promise<ChatStreamResult[]> {
      for (let i = 0; i < 2400 && !decided(); i++) await new Promise((r) => setTimeout(r, 25));
      controllers.forEach((ac, i) => {
        if (status[i] === 200 && !ended.has(i)) ac.abort();
      });
      return results;
    },
  };
}

const admitted = (rs: ChatStreamResult[]) => rs.filter((r) => r.status === 200);
const refused = (rs: ChatStreamResult[]) => rs.filter((r) => r.status === 429);
const header = (r: ChatStreamResult, name: string) => Number(r.headers.get(name));

describe("tenant limits under a 5x burst through the edge", () => {
  it("requests per minute: 60 at once against 12 admits exactly 12", async () => {
    const t = await newTenant(
      { edge, adminToken: ADMIN_TOKEN },
      { name: "rpm", requests_per_minute: 12, tokens_per_minute: 10_000_000, concurrent_streams: 100 },
    );
    const results = await burst(t.key, 60, "hello").settle();
    expect(admitted(results)).toHaveLength(12);
    expect(refused(results)).toHaveLength(48);
    for (const r of admitted(results)) expect(r.text).toBe("Hello world");
    const remaining = admitted(results).map((r) => header(r, "x-ratelimit-remaining-requests"));
    expect(remaining.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    for (const r of refused(results)) {
      expect(r.errorBody?.error?.code).toBe("rate_limit_exceeded");
      expect(header(r, "retry-after")).toBeGreaterThan(0);
      expect(header(r, "retry-after")).toBeLessThanOrEqual(60);
    }
  });

  it("concurrent streams: 30 at once against 6 admits exactly 6, and a slot frees when a client leaves", async () => {
    const t = await newTenant(
      { edge, adminToken: ADMIN_TOKEN },
      { name: "streams", requests_per_minute: 1000, tokens_per_minute: 10_000_000, concurrent_streams: 6 },
    );
    // every admission is decided while the admitted streams are still open, then they are ended
    const results = await burst(t.key, 30, "slow").settle();
    expect(admitted(results)).toHaveLength(6);
    expect(refused(results)).toHaveLength(24);
    for (const r of refused(results)) {
      expect(r.errorBody?.error?.code).toBe("concurrency_limit_exceeded");
      expect(header(r, "retry-after")).toBeGreaterThan(0);
    }
    // the released slots are settled in the background: the next request gets in within a few tries
    let next: ChatStreamResult | undefined;
    for (let i = 0; i < 50 && next?.status !== 200; i++) {
      next = await streamChat(edge.url, t.key, body("hello"));
      if (next.status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(next?.status).toBe(200);
  });

  it("tokens per minute: reservations for 4.5 requests, 23 at once, admit exactly 4", async () => {
    const each = reservation("slow");
    const limit = Math.floor(4.5 * each);
    const t = await newTenant(
      { edge, adminToken: ADMIN_TOKEN },
      { name: "tpm", requests_per_minute: 1000, tokens_per_minute: limit, concurrent_streams: 100 },
    );
    const results = await burst(t.key, 23, "slow").settle();
    expect(admitted(results)).toHaveLength(4);
    expect(refused(results)).toHaveLength(19);
    for (const r of refused(results)) expect(r.errorBody?.error?.code).toBe("rate_limit_exceeded");
    const remaining = admitted(results).map((r) => header(r, "x-ratelimit-remaining-tokens"));
    expect(remaining.sort((a, b) => b - a)).toEqual([1, 2, 3, 4].map((k) => limit - k * each));
  });
});
