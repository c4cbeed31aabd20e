/**
 * Routing across replicas through the edge's real entry point, in workerd:
 * shard lists set and removed through the admin API (stored in D1, taking
 * effect at the next request), least outstanding requests between two scripted
 * GPU services, a refused shard's breaker opening (tried once, then left alone
 * while the other serves, then one trial after the cool-down), and a shard
 * that stalls mid-stream opening its breaker too. This file's own scripted
 * services (routing, routingB) count the calls each one got.
 */
import { beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { shardPool } from "../../edge/src/gpu/shard-pool.js";
import {
  ADMIN_TOKEN,
  chat,
  chatBody,
  edge,
  edgeWith,
  newTenant,
  readUntil,
  resetScripted,
  scriptedState,
  type TestTenant,
  until,
} from "./edge-client.js";

const A = () => inject("scripted").routing;
const B = () => inject("scripted").routingB;
/** A loopback port where nothing listens (from the global setup). */
const dead = () => (JSON.parse(inject("modelRoutes")) as Record<string, string[]>).unreachable[0];

interface RouteEntry {
  source: string;
  urls: string[];
  shards: { url: string; breaker: string; outstanding: number; attempts: number; failures: number }[];
}

function admin(method: string, path: string, body?: unknown, token = ADMIN_TOKEN): Promise<Response> {
  return edge(`/admin/routes${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function setRoute(model: string, urls: string[]): Promise<void> {
  const res = await admin("PUT", `/${model}`, { urls });
  expect(res.status, await res.clone().text()).toBe(200);
  expect(await res.json()).toEqual({ model, source: "admin", urls });
}

async function routesNow(): Promise<{ routes: Record<string, RouteEntry>; withdrawn: string[] }> {
  const res = await admin("GET", "");
  expect(res.status).toBe(200);
  return res.json();
}

const shard = async (model: string, url: string) => (await routesNow()).routes[model].shards.find((s) => s.url === url);

async function hello(model: string): Promise<void> {
  const res = await chat(t.key, chatBody("hello", { model }));
  expect(res.status, await res.clone().text()).toBe(200);
  expect(await res.json()).toMatchObject({ choices: [{ message: { content: "Hello world" } }] });
}

/** A greedy "hello" through the app with some variables changed. */
async function helloWith(vars: Record<string, string>, model: string): Promise<void> {
  const res = await edgeWith(vars, "/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
    body: JSON.stringify(chatBody("hello", { model })),
  });
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({ choices: [{ message: { content: "Hello world" } }] });
}

let t: TestTenant;
beforeAll(async () => {
  t = await newTenant({ requests_per_minute: 1000, tokens_per_minute: 10_000_000, concurrent_streams: 50 });
});
beforeEach(async () => {
  shardPool.reset();
  await Promise.all([resetScripted(A()), resetScripted(B())]);
});

describe("shard lists through the admin API", () => {
  it("refuses without the admin token, and refuses lists that are not safe GPU service URLs", async () => {
    expect((await admin("GET", "", undefined, "wrong")).status).toBe(401);
    expect((await edge("/admin/routes")).status).toBe(401);
    const bad: [unknown, RegExp][] = [
      [{}, /urls must be a list/],
      [{ urls: "https://a.example" }, /urls must be a list/],
      [{ urls: [42] }, /must be a URL string/],
      [{ urls: ["http://10.0.0.1:50651"] }, /plain http to a non-loopback host/],
      [{ urls: ["ftp://a.example"] }, /must be an https:\/\/ URL/],
      [{ urls: ["https://a.example", "https://a.example/"] }, /twice/],
      [{ urls: Array.from({ length: 65 }, (_, i) => `https://a${i}.example`) }, /at most 64/],
    ];
    let checked = 0;
    for (const [body, message] of bad) {
      const res = await admin("PUT", "/refused-model", body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(message);
      checked++;
    }
    expect(checked).toBe(bad.length);
    expect((await routesNow()).routes["refused-model"]).toBeUndefined();
    const missing = await admin("DELETE", "/never-set");
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: "route_not_found" } });
  });

  it("routes a new model at the next request, replaces a list, withdraws a model, and gives it back to MODEL_ROUTES", async () => {
    expect((await chat(t.key, chatBody("hello", { model: "added" }))).status).toBe(404);
    await setRoute("added", [A()]);
    await hello("added");
    expect((await scriptedState(A())).calls).toBe(1);
    const models = (await (await edge("/v1/models", { headers: { authorization: `Bearer ${t.key}` } })).json()) as {
      data: { id: string }[];
    };
    expect(models.data.map((m) => m.id)).toContain("added");

    await setRoute("added", [B()]);
    await hello("added");
    expect((await scriptedState(B())).calls).toBe(1);
    expect((await scriptedState(A())).calls).toBe(1);

    // a model of MODEL_ROUTES ("files") replaced, withdrawn, then given back
    const before = (await routesNow()).routes.files;
    expect(before.source).toBe("MODEL_ROUTES");
    await setRoute("files", [A()]);
    await hello("files");
    expect((await scriptedState(A())).calls).toBe(2);
    expect((await routesNow()).routes.files).toMatchObject({ source: "admin", urls: [A()] });
    await setRoute("files", []);
    const gone = await chat(t.key, chatBody("hello", { model: "files" }));
    expect(gone.status).toBe(404);
    expect(await gone.json()).toMatchObject({ error: { code: "model_not_found" } });
    expect((await routesNow()).withdrawn).toContain("files");
    const back = await admin("DELETE", "/files");
    expect(back.status).toBe(200);
    expect(await back.json()).toEqual({ model: "files", source: "MODEL_ROUTES", urls: before.urls });
    expect((await routesNow()).routes.files).toMatchObject({ source: "MODEL_ROUTES", urls: before.urls });
    expect((await admin("DELETE", "/added")).status).toBe(200);
    expect((await chat(t.key, chatBody("hello", { model: "added" }))).status).toBe(404);
  });
});

describe("picking a replica", () => {
  it("sends requests to the replica with the fewest open streams, and spreads them evenly when idle", async () => {
    await setRoute("pair", [A(), B()]);
    // one long stream holds one replica
    const slow = await chat(t.key, chatBody("slow", { model: "pair", stream: true }));
    expect(slow.status).toBe(200);
    const reader = (slow.body as ReadableStream<Uint8Array>).getReader();
    await readUntil(reader, '"content":"0 "');
    const busy = (await scriptedState(A())).calls === 1 ? A() : B();
    const idle = busy === A() ? B() : A();
    expect((await shard("pair", busy))?.outstanding).toBe(1);
    for (let i = 0; i < 3; i++) await hello("pair");
    expect((await scriptedState(busy)).calls).toBe(1);
    expect((await scriptedState(idle)).calls).toBe(3);

    await reader.cancel();
    await until(async () => ((await scriptedState(busy)).cancelled === 1 ? true : undefined));
    await until(async () => ((await shard("pair", busy))?.outstanding === 0 ? true : undefined));
    for (let i = 0; i < 4; i++) await hello("pair");
    expect((await scriptedState(busy)).calls).toBe(1 + 2);
    expect((await scriptedState(idle)).calls).toBe(3 + 2);
    expect((await routesNow()).routes.pair.shards.map((s) => s.breaker)).toEqual(["closed", "closed"]);
  });

  it("marks a refused replica down: tried once, then left alone while the other serves, then one trial after the cool-down", async () => {
    await setRoute("half-dead", [dead(), A()]);
    // a cool-down of an hour: nothing but the breaker keeps the edge off the dead replica
    for (let i = 0; i < 4; i++) await helloWith({ SHARD_COOLDOWN_MS: "3600000" }, "half-dead");
    expect((await scriptedState(A())).calls).toBe(4);
    expect(await shard("half-dead", dead())).toMatchObject({
      breaker: "open",
      attempts: 1,
      failures: 1,
      outstanding: 0,
    });

    // a short cool-down: once it is over, the next request is the trial (and fails over to A)
    shardPool.reset();
    const quick = { SHARD_COOLDOWN_MS: "100" };
    await helloWith(quick, "half-dead");
    expect(await shard("half-dead", dead())).toMatchObject({ attempts: 1, failures: 1 });
    await until(async () => ((await shard("half-dead", dead()))?.breaker === "half-open" ? true : undefined));
    await helloWith(quick, "half-dead");
    expect(await shard("half-dead", dead())).toMatchObject({ attempts: 2, failures: 2 });
    expect((await scriptedState(A())).calls).toBe(4 + 2);
  });

  it("marks a replica that stalls mid-stream down", async () => {
    await setRoute("stalls", [A()]);
    const res = await edgeWith({ GPU_STALL_TIMEOUT_MS: "300" }, "/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody("stall-after-first", { model: "stalls", stream: true })),
    });
    expect(await res.text()).toContain('"gpu_stalled"');
    expect(await shard("stalls", A())).toMatchObject({ breaker: "open", attempts: 1, failures: 1, outstanding: 0 });
  });
});
