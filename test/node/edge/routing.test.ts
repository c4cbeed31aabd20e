/**
 * Routing through the real parts: `wrangler dev` in front of three real GPU
 * service processes on the demo model, on loopback ports the system picks.
 * Replicas A and B serve "demo"; C serves the same weights as "other", which
 * no route names at first.
 *
 * - Requests spread across A and B (least outstanding requests, ties rotated).
 * - A is killed (SIGKILL): the edge marks it down (its breaker opens, seen
 *   through GET /admin/routes), every request is answered by B, and A is not
 *   tried again while it is down, except for its trial after the cool-down.
 * - A is started again on its port: a trial request finds it, its breaker
 *   closes and it takes traffic again.
 * - The shard lists change through the admin API while wrangler keeps running
 *   (same process): "demo" narrowed to B alone, "other" routed to C, then
 *   "demo" given back to MODEL_ROUTES and spread over A and B again.
 *
 * Which replica served a request is read from the replicas' own logs (the
 * request id the client sent). Every answer is checked against the answer A
 * gives when called directly.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EdgeDevProcess, startEdgeDev } from "../../support/edge-dev.js";
import { chatBody, dataUrl, directAnswer, newTenant, until } from "../../support/edge-stack.js";
import { demoModelDir, exitOf, type GpuServiceProcess, repoRoot, startGpuService } from "../../support/gpu-service.js";
import { jsonLines } from "../../support/service-logs.js";

const QUESTION = "describe the picture .";
const MAX_TOKENS = 24;
/** Short, so that the trial after a failure comes within the test; repeated failures double it. */
const COOLDOWN_MS = 3000;
const image = readFileSync(join(repoRoot, "training/data/test/0000.png"));

type Name = "A" | "B" | "C";
const replicas = {} as Record<Name, GpuServiceProcess>;
let modelsDirs: string[] = [];
let edge: EdgeDevProcess;
let key: string;
let expected: string;
let admin: Record<string, string>;
let sent = 0;

/** A models directory with the demo model under `name`. */
function modelsDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), "twigserve-routing-models-"));
  symlinkSync(demoModelDir, join(dir, name));
  modelsDirs.push(dir);
  return dir;
}

const serviceEnv = (model: string, dir: string) => ({
  TWIG_MODELS_DIR: dir,
  TWIG_DEFAULT_MODEL: model,
  TWIG_ENGINE_THREADS: "1",
});

/** Which replica logged a Generate for `requestId` (waits for the log line). */
async function servedBy(requestId: string): Promise<Name> {
  return until(() =>
    (Object.keys(replicas) as Name[]).find((n) =>
      jsonLines(replicas[n].output()).some((l) => l.msg === "generate" && l.requestId === requestId),
    ),
  );
}

/** One greedy chat completion through the edge: checked against the direct answer; returns who served it. */
async function ask(model = "demo"): Promise<Name> {
  const requestId = `routing-${sent++}`;
  const res = await fetch(`${edge.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-request-id": requestId },
    body: JSON.stringify(chatBody(model, dataUrl(image), QUESTION, { max_tokens: MAX_TOKENS })),
  });
  const body = (await res.json()) as { choices?: { message: { content: string } }[] };
  expect(res.status, JSON.stringify(body)).toBe(200);
  expect(body.choices?.[0].message.content).toBe(expected);
  return servedBy(requestId);
}

/** `n` requests at once; how many each replica served. */
async function burst(n: number, model = "demo"): Promise<Record<Name, number>> {
  const who = await Promise.all(Array.from({ length: n }, () => ask(model)));
  const counts: Record<Name, number> = { A: 0, B: 0, C: 0 };
  for (const w of who) counts[w]++;
  expect(counts.A + counts.B + counts.C).toBe(n);
  return counts;
}

interface ShardView {
  url: string;
  breaker: string;
  outstanding: number;
  attempts: number;
  failures: number;
  retryInMs?: number;
}

async function routes(): Promise<Record<string, { source: string; urls: string[]; shards: ShardView[] }>> {
  const res = await fetch(`${edge.url}/admin/routes`, { headers: admin });
  expect(res.status).toBe(200);
  return ((await res.json()) as { routes: Record<string, { source: string; urls: string[]; shards: ShardView[] }> })
    .routes;
}

const shardOf = async (name: Name, model = "demo") =>
  (await routes())[model].shards.find((s) => s.url === replicas[name].url) as ShardView;

async function setRoute(model: string, urls: string[] | null): Promise<void> {
  const res = await fetch(`${edge.url}/admin/routes/${model}`, {
    method: urls ? "PUT" : "DELETE",
    headers: { ...admin, "content-type": "application/json" },
    body: urls ? JSON.stringify({ urls }) : undefined,
  });
  expect(res.status, await res.clone().text()).toBe(200);
}

const exited = (p: GpuServiceProcess) => exitOf(p.child);

beforeAll(async () => {
  const demoDir = modelsDir("demo");
  [replicas.A, replicas.B, replicas.C] = await Promise.all([
    startGpuService(0, serviceEnv("demo", demoDir)),
    startGpuService(0, serviceEnv("demo", demoDir)),
    startGpuService(0, serviceEnv("other", modelsDir("other"))),
  ]);
  edge = await startEdgeDev(
    {
      GPU_SERVICE_URL: replicas.B.url,
      MODEL_ROUTES: JSON.stringify({ demo: [replicas.A.url, replicas.B.url] }),
      SHARD_COOLDOWN_MS: String(COOLDOWN_MS),
      SHARD_MAX_COOLDOWN_MS: String(4 * COOLDOWN_MS),
    },
    { ready: (res) => res.status === 200 },
  );
  admin = { authorization: `Bearer ${edge.secrets.ADMIN_TOKEN}` };
  key = (await newTenant(edge, { requests_per_minute: 10_000, tokens_per_minute: 10_000_000, concurrent_streams: 32 }))
    .key;
  expected = (await directAnswer(replicas.A, { model: "demo", image, question: QUESTION, maxTokens: MAX_TOKENS })).text;
  expect(expected.length).toBeGreaterThan(0);
}, 240_000);

afterAll(async () => {
  await edge?.stop();
  await Promise.all(Object.values(replicas).map((r) => r.stop()));
  for (const dir of modelsDirs) rmSync(dir, { recursive: true, force: true });
  modelsDirs = [];
});

describe("routing across replicas through wrangler dev", () => {
  it("spreads requests across the replicas of a model", async () => {
    const sequential: Record<Name, number> = { A: 0, B: 0, C: 0 };
    for (let i = 0; i < 4; i++) sequential[await ask()]++;
    const concurrent = await burst(6);
    console.log(
      `spread: 4 one after another -> A ${sequential.A}, B ${sequential.B}; 6 at once -> A ${concurrent.A}, B ${concurrent.B}`,
    );
    // idle replicas take turns; at once, the fewer outstanding requests win
    expect(sequential).toEqual({ A: 2, B: 2, C: 0 });
    expect(concurrent.A).toBeGreaterThan(0);
    expect(concurrent.B).toBeGreaterThan(0);
    expect(concurrent.C).toBe(0);
    const view = (await routes()).demo.shards;
    expect(view.map((s) => [s.breaker, s.outstanding])).toEqual([
      ["closed", 0],
      ["closed", 0],
    ]);
  });

  it("marks a killed replica down, sends its requests to the survivor, and takes it back when it restarts", async () => {
    const attemptsBefore = (await shardOf("A")).attempts;
    replicas.A.child.kill("SIGKILL");
    await exited(replicas.A);

    const after: Name[] = [];
    for (let i = 0; i < 6; i++) after.push(await ask());
    const down = await shardOf("A");
    const triedDead = down.attempts - attemptsBefore;
    console.log(
      `replica A killed: 6 requests answered by ${after.join(" ")}; A tried ${triedDead} time(s), breaker ${down.breaker}, ${down.failures} failure(s)`,
    );
    expect(after).toEqual(["B", "B", "B", "B", "B", "B"]);
    expect(down.failures).toBeGreaterThanOrEqual(1);
    // marked down: not tried by every request (only its first, and a trial after each cool-down)
    expect(triedDead).toBeGreaterThanOrEqual(1);
    expect(triedDead).toBeLessThan(after.length);

    replicas.A = await startGpuService(replicas.A.port, serviceEnv("demo", modelsDirs[0]));
    const upAt = performance.now();
    let rejoinedAfter = -1;
    for (let i = 0; i < 200 && rejoinedAfter < 0; i++) {
      if ((await ask()) === "A") rejoinedAfter = i + 1;
      else await new Promise((r) => setTimeout(r, 200));
    }
    expect(rejoinedAfter, "the restarted replica served a request").toBeGreaterThan(0);
    const seconds = (performance.now() - upAt) / 1000;
    expect((await shardOf("A")).breaker).toBe("closed");
    const spread = await burst(6);
    console.log(
      `replica A restarted: its trial succeeded at request ${rejoinedAfter} (${seconds.toFixed(1)} s after it was up); then 6 at once -> A ${spread.A}, B ${spread.B}`,
    );
    expect(spread.A).toBeGreaterThan(0);
    expect(spread.B).toBeGreaterThan(0);
  });

  it("takes shard lists changed through the admin API at the next request, with wrangler still running", async () => {
    const pid = edge.pid;
    const noRoute = await fetch(`${edge.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody("other", dataUrl(image), QUESTION, { max_tokens: MAX_TOKENS })),
    });
    expect(noRoute.status).toBe(404);
    await noRoute.body?.cancel();

    await setRoute("demo", [replicas.B.url]);
    const narrowed = await burst(4);
    await setRoute("other", [replicas.C.url]);
    const other = await burst(2, "other");
    await setRoute("demo", null);
    const back: Record<Name, number> = { A: 0, B: 0, C: 0 };
    for (let i = 0; i < 4; i++) back[await ask()]++;
    console.log(
      `admin API: demo -> [B]: A ${narrowed.A}, B ${narrowed.B}; other -> [C]: C ${other.C}; demo back to MODEL_ROUTES: A ${back.A}, B ${back.B}`,
    );
    expect(narrowed).toEqual({ A: 0, B: 4, C: 0 });
    expect(other).toEqual({ A: 0, B: 0, C: 2 });
    expect(back.A).toBeGreaterThan(0);
    expect(back.B).toBeGreaterThan(0);
    expect((await routes()).demo.source).toBe("MODEL_ROUTES");
    // the same wrangler process all along
    expect(edge.child.exitCode).toBeNull();
    expect(edge.pid).toBe(pid);
  });
});
