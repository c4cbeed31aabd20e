/**
 * Every GPU call has a deadline and a transport timeout: a shard that accepts
 * the connection and never answers is given up after GPU_CONNECT_TIMEOUT_MS
 * and the next shard is tried; a shard that goes silent after the first token
 * ends the answer with an error after GPU_STALL_TIMEOUT_MS; the remaining
 * GPU_DEADLINE_MS goes to the shard as its deadline. Upstream is this file's
 * own scripted GPU service (models "calls" and "calls-hanging", the latter
 * behind a TCP server that accepts and never answers). The timeouts are set
 * per request through the app (edgeWith), short enough to wait for.
 */
import { beforeAll, describe, expect, inject, it } from "vitest";
import { shardPool } from "../../edge/src/gpu/shard-pool.js";
import {
  chatBody,
  edgeWith,
  newTenant,
  resetScripted,
  scriptedState,
  sseData,
  type TestTenant,
} from "./edge-client.js";

const scripted = () => inject("scripted").calls;
let t: TestTenant;
beforeAll(async () => {
  t = await newTenant({ requests_per_minute: 1000, concurrent_streams: 50 });
});

const chatWith = (vars: Record<string, string>, body: unknown) =>
  edgeWith(vars, "/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });

describe("the transport timeout (connection and first byte)", () => {
  it("gives up on a shard that accepts and never answers, and serves the request from the next", async () => {
    shardPool.reset();
    await resetScripted(scripted());
    const vars = { GPU_CONNECT_TIMEOUT_MS: "300" };
    // the order rotates: two requests, and one of them meets the hanging shard first
    let served = 0;
    for (let i = 0; i < 2; i++) {
      const res = await chatWith(vars, chatBody("hello", { model: "calls-hanging" }));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ choices: [{ message: { content: "Hello world" } }] });
      served++;
    }
    expect(served).toBe(2);
    expect((await scriptedState(scripted())).calls).toBe(2);
    // the hanging shard was tried (the first request starts with it), and the edge hung up on it
    const hanging = (await (await fetch(`${inject("gpuControlUrl")}/hanging`)).json()) as Record<string, number>;
    expect(hanging.accepted).toBeGreaterThanOrEqual(1);
    expect(hanging.closedByCaller).toBe(hanging.accepted);
  });

  it("answers 503 when the only shard never answers, and cancels the call", async () => {
    await resetScripted(scripted());
    const res = await chatWith({ GPU_CONNECT_TIMEOUT_MS: "300" }, chatBody("hang", { model: "calls" }));
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("gpu_unavailable");
    // where the shard is and what it said stay in the log
    expect(body.error.message).not.toContain("127.0.0.1");
    expect(await scriptedState(scripted())).toMatchObject({ calls: 1, cancelled: 1 });
  });
});

describe("a shard that stalls after the first token", () => {
  it("ends a stream with an error event (not [DONE]) and cancels the call", async () => {
    await resetScripted(scripted());
    const res = await chatWith(
      { GPU_STALL_TIMEOUT_MS: "300" },
      chatBody("stall-after-first", { model: "calls", stream: true }),
    );
    expect(res.status).toBe(200);
    const data = sseData(await res.text());
    expect(data).not.toContain("[DONE]");
    expect(JSON.parse(data[1]).choices[0].delta.content).toBe("partial");
    expect(JSON.parse(data.at(-1) as string)).toMatchObject({
      error: { code: "gpu_stalled", message: expect.stringMatching(/stopped sending \(nothing for 300 ms\)/) },
    });
    expect(await scriptedState(scripted())).toMatchObject({ calls: 1, cancelled: 1 });
  });

  it("answers a non-stream request 503 gpu_stalled", async () => {
    await resetScripted(scripted());
    const res = await chatWith({ GPU_STALL_TIMEOUT_MS: "300" }, chatBody("stall-after-first", { model: "calls" }));
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: { code: "gpu_stalled" } });
    expect(await scriptedState(scripted())).toMatchObject({ calls: 1, cancelled: 1 });
  });
});

describe("the deadline", () => {
  it("goes to the shard: the request's deadline_ms and the Connect timeout are what is left of GPU_DEADLINE_MS", async () => {
    await resetScripted(scripted());
    const res = await chatWith({ GPU_DEADLINE_MS: "45000" }, chatBody("echo", { model: "calls" }));
    expect(res.status).toBe(200);
    await res.json();
    const seen = await scriptedState(scripted());
    const deadlineMs = Number((seen.lastRequest as { deadlineMs?: number }).deadlineMs);
    expect(deadlineMs).toBeGreaterThan(0);
    expect(deadlineMs).toBeLessThanOrEqual(45000);
    expect(seen.lastTimeoutMs).toBeGreaterThan(0);
    expect(seen.lastTimeoutMs).toBeLessThanOrEqual(45000);
  });

  it("ends a stream that outlives it with an error event, and a non-stream request with a 503", async () => {
    await resetScripted(scripted());
    // "slow" would take 10 s
    const vars = { GPU_DEADLINE_MS: "400" };
    const stream = await chatWith(vars, chatBody("slow", { model: "calls", stream: true }));
    const data = sseData(await stream.text());
    expect(data).not.toContain("[DONE]");
    expect(JSON.parse(data.at(-1) as string)).toMatchObject({ error: { code: "deadline_exceeded" } });
    const whole = await chatWith(vars, chatBody("slow", { model: "calls" }));
    expect(whole.status).toBe(503);
    expect(await whole.json()).toMatchObject({ error: { code: "deadline_exceeded" } });
    expect(await scriptedState(scripted())).toMatchObject({ calls: 2 });
  });
});
