/**
 * A client that goes away before its answer has started (a non-stream
 * request, or a stream still waiting for its first event) frees its tenant's
 * concurrency slot at once and cancels the GPU call. The Workers runtime
 * aborts the request's signal then (the `enable_request_signal` flag) and
 * would tear the request down at once; the edge keeps it alive in waitUntil
 * until the grant is settled (edge/src/limits/grant.ts).
 *
 * The requests go through the edge's real entry point with an AbortSignal,
 * which is how the runtime delivers a disconnect to a Worker: local workerd's
 * HTTP listener (under `wrangler dev`) does not notice a client that goes away
 * before the response starts, so this cannot be shown through `wrangler dev`.
 * Upstream is this file's own scripted GPU service (model "disconnect"), and
 * the real GPU service on the demo model, frozen at its first delta so that
 * the generation is certainly still running when the client leaves.
 */
import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import type { TenantLimiter } from "../../edge/src/limits/limiter.js";
import { chat, chatBody, newTenant, resetScripted, scriptedState, type TestTenant, until } from "./edge-client.js";

const scripted = () => inject("scripted").disconnect;
const usage = (tenantId: string) =>
  runInDurableObject(env.LIMITER.get(env.LIMITER.idFromName(tenantId)), (o: TenantLimiter) => o.usage());
const slotFreed = (tenantId: string) =>
  until(async () => {
    const u = await usage(tenantId);
    return u.open === 0 ? u : undefined;
  });

/** Sends a chat request that the test can abandon; its outcome (an abort) is swallowed. */
function abandonable(t: TestTenant, body: unknown, requestId = crypto.randomUUID()) {
  const client = new AbortController();
  const answer = exports.default.fetch(
    new Request("http://edge.test/v1/chat/completions", {
      method: "POST",
      signal: client.signal,
      headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json", "x-request-id": requestId },
      body: JSON.stringify(body),
    }),
  );
  answer.catch(() => {});
  return { leave: () => client.abort(), answer };
}

describe("a client that goes away before its answer starts (scripted GPU service)", () => {
  it("non-stream, mid-generation: the GPU call is cancelled, the slot freed at once, the tokens produced charged", async () => {
    await resetScripted(scripted());
    const t = await newTenant({ concurrent_streams: 1, requests_per_minute: 100 });
    // "slow" sends a delta every 100 ms for 10 s
    const { leave } = abandonable(t, chatBody("slow", { model: "disconnect", max_tokens: 500 }));
    await until(async () => ((await scriptedState(scripted())).lastDeltas >= 2 ? true : undefined));
    leave();
    const u = await slotFreed(t.id);
    const seen = await scriptedState(scripted());
    // without the cancel the edge would have read all 100 deltas before freeing the slot
    expect(seen.cancelled).toBe(1);
    expect(seen.lastDeltas).toBeLessThan(100);
    expect(u.tokens).toBeGreaterThanOrEqual(70);
    expect(u.tokens).toBeLessThanOrEqual(70 + seen.lastDeltas);
    const next = await chat(t.key, chatBody("hello", { model: "disconnect" }));
    expect(next.status).toBe(200);
    expect(await next.json()).toMatchObject({ choices: [{ message: { content: "Hello world" } }] });
  });

  for (const stream of [false, true]) {
    it(`${stream ? "stream" : "non-stream"}, before the first event: the GPU call is cancelled and the slot freed`, async () => {
      await resetScripted(scripted());
      const t = await newTenant({ concurrent_streams: 1, requests_per_minute: 100 });
      // "hang" sends nothing at all until cancelled
      const { leave } = abandonable(t, chatBody("hang", { model: "disconnect", stream }));
      await until(async () => ((await scriptedState(scripted())).calls === 1 ? true : undefined));
      leave();
      const u = await slotFreed(t.id);
      expect(u).toMatchObject({ open: 0, tokens: 0 });
      expect(await scriptedState(scripted())).toMatchObject({ calls: 1, cancelled: 1 });
    });
  }
});

describe("a non-stream client that goes away mid-answer (the real GPU service, demo model)", () => {
  const control = (path: string, method = "GET") =>
    fetch(`${inject("gpuControlUrl")}${path}`, { method }).then((r) => r.json() as Promise<Record<string, unknown>>);
  const describeScene = () =>
    chatBody(
      "describe the picture .",
      { model: "demo", temperature: 0, max_tokens: 64 },
      `data:image/png;base64,${inject("demoScene")}`,
    );
  const contentOf = async (res: Response) =>
    ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0].message.content;

  it("frees the tenant's only slot while the GPU service is frozen mid-answer, and the service stops that answer", async () => {
    const reference = await chat((await newTenant()).key, describeScene());
    expect(reference.status).toBe(200);
    const expected = await contentOf(reference);
    expect(expected.length).toBeGreaterThan(0);

    const t = await newTenant({ concurrent_streams: 1, requests_per_minute: 100 });
    await control("/pause-at-next-first-delta", "POST");
    const requestId = `leaves-${crypto.randomUUID()}`;
    const { leave } = abandonable(t, describeScene(), requestId);
    try {
      await until(async () => ((await control("/state")).paused ? true : undefined));
      leave();
      // nothing moves upstream while the service is frozen: only the client's going away can free the slot
      const u = await slotFreed(t.id);
      expect(u.open).toBe(0);
      // and the edge hung up on the GPU service (the proxy in front of it saw the call closed)
      expect((await control("/state")).proxyCancelled).toBe(1);
    } finally {
      await control("/resume", "POST");
    }
    const lines = await until(async () => {
      const found = (await control(`/log?requestId=${requestId}`)) as unknown as Record<string, unknown>[];
      return found.length > 0 ? found : undefined;
    });
    expect(lines).toEqual([expect.objectContaining({ code: "Canceled", error: "the caller went away" })]);
    // the tenant's one slot is free: its next request is admitted and answered in full
    const next = await chat(t.key, describeScene());
    expect(next.status).toBe(200);
    expect(await contentOf(next)).toBe(expected);
  });
});
