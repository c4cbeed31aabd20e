/**
 * Faults: the real edge (`wrangler dev`) in front of real GPU service
 * processes on loopback, serving a tiny random model (its greedy answers run to
 * max_tokens, so streams last long enough to be cut).
 *
 * - Two shards of "tiny"; one is killed (SIGKILL) while it streams (its
 *   metrics show a request past its first token and not finished). A client
 *   whose stream was on it gets a terminal error event (the delay is printed);
 *   a client still queued there is failed over before its first token; every
 *   other stream completes with the direct answer. New requests go to the
 *   survivor. The killed shard is started again on its port and takes traffic.
 * - One shard of "solo" is restarted (SIGTERM: it drains) while the edge holds
 *   streams on it: those complete with the direct answer, a request during the
 *   drain gets 503 with Retry-After, and after the restart the edge serves again.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyModel } from "../../gpu-service/tools/make-tiny/tiny-model.js";
import { newTenant } from "../support/demo-stack.js";
import { type EdgeDevProcess, startEdgeDev } from "../support/edge-dev.js";
import { exitOf, type GpuServiceProcess, startGpuService } from "../support/gpu-service.js";
import { readMetrics, waitForMetric } from "../support/service-client.js";
import { jsonLines, requestLogLines } from "../support/service-logs.js";
import { type ChatStreamResult, streamChat } from "../support/sse-client.js";

const ADMIN_TOKEN = "faults-admin-token";
const MAX_TOKENS = 160;
const QUESTION = "describe the picture";

let scratch: string;
let png: Buffer;
let shardA: GpuServiceProcess;
let shardB: GpuServiceProcess;
let solo: GpuServiceProcess;
let edge: EdgeDevProcess;
let tenant: { id: string; key: string };
const expected: Record<string, string> = {};
const modelsFor: Record<string, string> = {};

const shardEnv = (model: string) => ({
  TWIG_MODELS_DIR: modelsFor[model],
  TWIG_DEFAULT_MODEL: model,
  TWIG_ENGINE_THREADS: "1",
  TWIG_MAX_QUEUE: "64",
  // one generation at a time, so that a burst queues at the shard (the drain test counts the queue)
  TWIG_MAX_BATCH: "1",
});

const body = (model: string) => ({
  model,
  max_tokens: MAX_TOKENS,
  temperature: 0,
  twigvlm: { mode: "base" },
  messages: [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: `data:image/png;base64,${png.toString("base64")}` } },
        { type: "text", text: QUESTION },
      ],
    },
  ],
});

async function directAnswer(shard: GpuServiceProcess, model: string): Promise<string> {
  const client = createClient(InferenceService, createConnectTransport({ baseUrl: shard.url, httpVersion: "1.1" }));
  let text = "";
  for await (const ev of client.generate({
    model,
    image: { source: { case: "data", value: png } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: QUESTION }] } },
    sampling: { maxTokens: MAX_TOKENS, temperature: 0, topP: 1 },
    acceleration: { mode: Mode.BASE },
  }))
    if (ev.event.case === "delta") text += ev.event.value.text;
  return text;
}

/** The request ids a shard has logged a finished or failed Generate for. */
const servedBy = (shard: GpuServiceProcess) =>
  new Set(
    jsonLines(shard.output())
      .filter((l) => l.msg === "generate")
      .map((l) => String(l.requestId)),
  );

const exited = (shard: GpuServiceProcess) => exitOf(shard.child);

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "twigserve-faults-"));
  writeTinyModel(join(scratch, "model"), 11, "hf");
  for (const model of ["tiny", "solo"]) {
    modelsFor[model] = join(scratch, `models-${model}`);
    mkdirSync(modelsFor[model]);
    symlinkSync(join(scratch, "model"), join(modelsFor[model], model));
  }
  png = await sharp({ create: { width: 32, height: 24, channels: 3, background: { r: 200, g: 60, b: 30 } } })
    .png()
    .toBuffer();
  [shardA, shardB, solo] = await Promise.all([
    startGpuService(0, shardEnv("tiny")),
    startGpuService(0, shardEnv("tiny")),
    startGpuService(0, shardEnv("solo")),
  ]);
  edge = await startEdgeDev({
    GPU_SERVICE_URL: shardA.url,
    MODEL_ROUTES: JSON.stringify({ tiny: [shardA.url, shardB.url], solo: [solo.url] }),
    ADMIN_TOKEN,
  });
  tenant = await newTenant(
    { edge, adminToken: ADMIN_TOKEN },
    { name: "faults", requests_per_minute: 1000, tokens_per_minute: 10_000_000, concurrent_streams: 32 },
  );
  expected.tiny = await directAnswer(shardB, "tiny");
  expected.solo = await directAnswer(solo, "solo");
  expect(expected.tiny.length).toBeGreaterThan(0);
}, 240_000);

afterAll(async () => {
  await edge?.stop();
  await Promise.all([shardA, shardB, solo].map((s) => s?.stop()));
  rmSync(scratch, { recursive: true, force: true });
});

describe("shard faults through the edge", () => {
  it("a shard killed mid-stream: error events at once, failover before the first token, the survivor serves, the restarted shard rejoins", async () => {
    let killedAt = 0;
    let killed: Promise<void> | undefined;
    const results = await burstUntilFirstChunk("tiny", 8, "kill", () => {
      // SIGKILL once shardA is mid-stream: a request there has sent its first token and not finished
      // (its first token reached the edge, so the edge cannot fail it over). Which streams are on which
      // shard the client cannot see; the shard's metrics can.
      killed = untilMidStream(shardA, "tiny").then(() => {
        killedAt = performance.now();
        shardA.child.kill("SIGKILL");
      });
      killed.catch(() => {}); // awaited below, after the streams end
    });
    await killed;
    await exited(shardA);

    let completed = 0;
    const errorDelays: number[] = [];
    for (const [i, r] of results.entries()) {
      expect(r.status, `stream ${i}: ${JSON.stringify(r.errorBody)}`).toBe(200);
      expect(r.failure, `stream ${i}`).toBeUndefined();
      if (r.error) {
        // cut on the dead shard: a terminal error event, no [DONE], and what came before it was right
        expect(r.done, `stream ${i}`).toBe(false);
        expect(expected.tiny.startsWith(r.text), `stream ${i}: a prefix of the answer`).toBe(true);
        errorDelays.push((r.errorAt ?? 0) - killedAt);
      } else {
        expect(r.done, `stream ${i}`).toBe(true);
        expect(r.text, `stream ${i}`).toBe(expected.tiny);
        completed++;
      }
    }
    expect(completed + errorDelays.length).toBe(8);
    expect(errorDelays.length).toBeGreaterThan(0);
    expect(completed).toBeGreaterThan(0);
    console.log(
      `shard killed mid-stream: ${errorDelays.length} stream(s) got an error event after ${errorDelays.map((d) => d.toFixed(1)).join(", ")} ms (max ${Math.max(...errorDelays).toFixed(1)} ms); ${completed} completed (on the survivor, or failed over before their first token)`,
    );

    // new requests go to the survivor
    const after: ChatStreamResult[] = [];
    for (let i = 0; i < 4; i++)
      after.push(await streamChat(edge.url, tenant.key, body("tiny"), { requestId: `after-${i}` }));
    for (const r of after) {
      expect(r.status).toBe(200);
      expect(r.text).toBe(expected.tiny);
    }
    // a shard logs a request once its stream has ended, so the line can reach this process just after the
    // stream's last event: requestLogLines waits a little for it (the dead shard cannot have served any of them)
    for (let i = 0; i < 4; i++)
      expect(
        (await requestLogLines(() => shardB.output(), `after-${i}`)).length,
        `after-${i} on the survivor`,
      ).toBeGreaterThan(0);

    // the killed shard comes back on its port and takes traffic again
    const port = shardA.port;
    shardA = await startGpuService(port, shardEnv("tiny"));
    const started = performance.now();
    let rejoinedAfter = -1;
    let sent = 0;
    for (; sent < 120 && rejoinedAfter < 0; sent++) {
      const r = await streamChat(edge.url, tenant.key, body("tiny"), { requestId: `rejoin-${sent}` });
      expect(r.status).toBe(200);
      expect(r.text).toBe(expected.tiny);
      if (servedBy(shardA).has(`rejoin-${sent}`)) rejoinedAfter = sent;
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(rejoinedAfter, "the restarted shard served a request").toBeGreaterThanOrEqual(0);
    console.log(
      `restarted shard took its first request after ${rejoinedAfter + 1} request(s), ${((performance.now() - started) / 1000).toFixed(1)} s after it was up`,
    );
  });

  it("a shard restarted (SIGTERM) while the edge holds streams: they finish, the drain answers 503, then the edge serves again", async () => {
    let drainProbe: Promise<ChatStreamResult> | undefined;
    let killed: Promise<void> | undefined;
    let queuedAtKill = 0;
    const held = await burstUntilFirstChunk("solo", 4, "held", () => {
      // SIGTERM once all four have reached the service (one generating, the rest queued): on a
      // loaded machine the last of them can still be on its way through the edge at the first chunk,
      // and a request that arrives during the drain is refused, as the probe below shows
      killed = waitForMetric(solo.metricsUrl, 'twig_queue_depth{model="solo"}', (q) => q >= 3).then((q) => {
        queuedAtKill = q;
        solo.child.kill("SIGTERM");
        // a moment later the service refuses new work; the edge has no other shard for "solo"
        drainProbe = new Promise((resolve) => setTimeout(resolve, 50)).then(() =>
          streamChat(edge.url, tenant.key, body("solo"), { requestId: "during-drain" }),
        );
      });
    });
    await killed;
    expect(queuedAtKill, "requests queued at the shard when it was told to stop").toBe(3);
    let finished = 0;
    for (const [i, r] of held.entries()) {
      expect(r.status, `held ${i}`).toBe(200);
      expect(r.done, `held ${i}`).toBe(true);
      expect(r.text, `held ${i}`).toBe(expected.solo);
      finished++;
    }
    expect(finished).toBe(4);
    const refused = await (drainProbe as Promise<ChatStreamResult>);
    expect(refused.status).toBe(503);
    expect(refused.errorBody?.error?.code).toBe("gpu_unavailable");
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await exited(solo)).toBe(0);

    solo = await startGpuService(solo.port, shardEnv("solo"));
    const again = await streamChat(edge.url, tenant.key, body("solo"), { requestId: "after-restart" });
    expect(again.status).toBe(200);
    expect(again.text).toBe(expected.solo);
  });
});

/** `n` concurrent streams; `onFirstChunk` runs once, the moment the first content chunk of any of them arrives. */
async function burstUntilFirstChunk(
  model: string,
  n: number,
  prefix: string,
  onFirstChunk: () => void,
): Promise<ChatStreamResult[]> {
  let fired = false;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      streamChat(edge.url, tenant.key, body(model), {
        requestId: `${prefix}-${i}`,
        onChunk: () => {
          if (!fired) {
            fired = true;
            onFirstChunk();
          }
        },
      }),
    ),
  );
  expect(fired, "some stream received content").toBe(true);
  return results;
}

/**
 * Resolves once `shard` is in the middle of a stream: one of its requests has had its first token
 * (time-to-first-token observed) and has not finished (duration not observed), and the same request
 * is still under way 40 ms later, so that its first token has reached the edge. Fails if that does
 * not happen within 20 s (every request of the shard ended before it could be caught mid-stream).
 */
async function untilMidStream(shard: GpuServiceProcess, model: string): Promise<void> {
  const series = [
    `twig_time_to_first_token_seconds_count{model="${model}"}`,
    `twig_request_duration_seconds_count{model="${model}"}`,
  ];
  const deadline = Date.now() + 20_000;
  let seen: number[] | undefined;
  while (Date.now() < deadline) {
    const [firsts, ends] = (await readMetrics(shard.metricsUrl, series)).map((v) => (Number.isNaN(v) ? 0 : v));
    if (firsts > ends && seen?.[0] === firsts && seen[1] === ends) return;
    seen = firsts > ends ? [firsts, ends] : undefined;
    await new Promise((r) => setTimeout(r, 40));
  }
  throw new Error(`${shard.url} was never caught in the middle of a stream`);
}
