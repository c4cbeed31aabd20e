/**
 * Scheduling through the real service process (one engine worker): a busy
 * tenant's burst does not starve a quiet tenant's request (bounded by the
 * number of requests served ahead of it, not by time), also with continuous
 * batching on (the worker decoding two requests at once), a full queue answers
 * RESOURCE_EXHAUSTED, and deadlines answer DEADLINE_EXCEEDED whether they pass
 * while running, while waiting, or on the gRPC client's side (grpc-js).
 */
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import {
  type CallResult,
  grpcInferenceStub,
  readMetric,
  serviceClient,
  waitForMetric,
} from "../../support/service-client.js";

const MAX_QUEUE = 8;
const DEPTH = 'twig_queue_depth{model="tiny"}';
let service: GpuServiceProcess & { modelDir: string };
let client: ReturnType<typeof serviceClient>;
/** How long one long (120-token) request takes end to end here: grpc-js's deadline is a quarter of it. */
let longMs: number;

beforeAll(async () => {
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 10, g: 90, b: 200 } } })
    .png()
    .toBuffer();
  // one request at a time (one lane); the batching service below has several
  service = await startTinyModelService(
    0,
    6,
    { TWIG_MAX_QUEUE: String(MAX_QUEUE), TWIG_MAX_BATCH: "1" },
    { alwaysTiny: true },
  );
  client = serviceClient(service.port, png);
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await client.call();
    expect(r.code).toBe("OK");
    runs.push(r.endedAt - r.sentAt);
  }
  longMs = Math.min(...runs);
  console.log(`one long request: ${longMs.toFixed(1)} ms end to end`);
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

/**
 * A busy tenant's burst queued behind the worker's `lanes` (7 - lanes waiting), then a quiet tenant's
 * request: the next free lane is the quiet tenant's. Busy requests that start (Started) after it
 * joined the queue and before it starts: at most one with one lane; with more, the `lanes` already in
 * the worker (a batch's Started comes after its prefill) and those the other lanes take while the
 * quiet one is prepared (its picture decoded), 2 * lanes - 1 in all. First come, first served would
 * start the whole burst first.
 */
async function expectFair(
  service: GpuServiceProcess,
  client: ReturnType<typeof serviceClient>,
  lanes: number,
  burst: number,
): Promise<void> {
  const order: string[] = [];
  const busy = Array.from({ length: burst }, (_, i) =>
    client.call({ tenantId: "busy" }, { onStarted: () => order.push(`busy-${i}`) }),
  );
  // the burst must be queued behind the running requests when the quiet request arrives
  const waiting = await waitForMetric(service.metricsUrl, DEPTH, (v) => v >= burst - lanes - 1);
  expect(waiting).toBeGreaterThanOrEqual(burst - lanes - 2);
  const quiet = client.call({ tenantId: "quiet" }, { onStarted: () => order.push("quiet") });
  const results = await Promise.all([...busy, quiet]);
  expect(results.map((r) => r.code)).toEqual(Array(burst + 1).fill("OK"));
  // Counted from when the quiet request joined the queue (the service's queue_ms before its start), not from
  // the depth read or from when it was sent: on a loaded machine a busy request or two can start before it gets
  // there, and those are rightly served first (first come).
  const q = results[burst];
  const quietStarted = q.startedAt ?? Number.POSITIVE_INFINITY;
  expect(q.queueMs).toBeDefined();
  const joined = quietStarted - (q.queueMs ?? 0);
  const later = results.slice(0, burst).filter((r) => (r.startedAt ?? 0) > joined);
  const servedAhead = later.filter((r) => (r.startedAt ?? 0) < quietStarted).length;
  console.log(
    `fairness (${lanes} lane(s)): ${waiting} busy requests waiting at the depth read, ${later.length} still to start when the quiet one joined the queue (queue_ms ${q.queueMs?.toFixed(1)}); ${servedAhead} busy request(s) started ahead of it; order ${order.join(" ")}`,
  );
  // first come, first served would start every one of them first
  expect(later.length).toBeGreaterThanOrEqual(burst - 2 * lanes - 2);
  expect(servedAhead).toBeLessThanOrEqual(2 * lanes - 1);
}

describe("scheduling in the real service", () => {
  it("serves a quiet tenant's request after at most one more of a busy tenant's queued burst", async () => {
    await expectFair(service, client, 1, 7);
  }, 60_000);

  it("answers RESOURCE_EXHAUSTED when the queue is full, and serves the rest", async () => {
    const burst = await Promise.all(Array.from({ length: 16 }, () => client.call({ tenantId: "burst" })));
    const codes = burst.map((r) => (r.code === "OK" ? "OK" : Code[r.code]));
    const exhausted = burst.filter((r) => r.code === Code.ResourceExhausted);
    console.log(`full queue: ${codes.filter((c) => c === "OK").length} served, ${exhausted.length} refused`);
    expect(new Set(codes)).toEqual(new Set(["OK", "ResourceExhausted"]));
    // one running and MAX_QUEUE waiting are admitted while the first runs; later ones find room as it drains
    expect(exhausted.length).toBeGreaterThanOrEqual(1);
    expect(burst.length - exhausted.length).toBeGreaterThanOrEqual(MAX_QUEUE + 1);
    for (const r of exhausted) {
      expect(r.message).toMatch(/queue is full \(8 waiting\)/);
      expect(r.startedAt).toBeUndefined();
    }
    expect(await readMetric(service.metricsUrl, DEPTH)).toBe(0);
  }, 60_000);

  it("answers DEADLINE_EXCEEDED when deadline_ms passes while generating", async () => {
    // Deadlines doubling from 1 ms: the short ones pass before the request starts, the long ones after
    // it finished; the generation lasts many times its prefill, so some pass while it is generating.
    const outcomes: string[] = [];
    for (let deadlineMs = 1; outcomes.at(-1) !== "finished" && deadlineMs < 600_000; deadlineMs *= 2) {
      const r = await client.call({ deadlineMs });
      if (r.code === "OK") outcomes.push("finished");
      else if (r.code !== Code.DeadlineExceeded) outcomes.push(`${Code[r.code]}: ${r.message}`);
      else outcomes.push(r.startedAt === undefined ? "before it started" : `while generating (${r.deltas} deltas)`);
    }
    console.log(`deadline_ms 1, 2, 4, ...: ${outcomes.join("; ")}`);
    expect(outcomes.at(-1)).toBe("finished");
    expect(outcomes.filter((o) => o.startsWith("while generating")).length).toBeGreaterThanOrEqual(1);
    expect(
      outcomes.every((o) => o === "finished" || o.startsWith("while generating") || o === "before it started"),
    ).toBe(true);
  }, 60_000);

  it("answers DEADLINE_EXCEEDED when deadline_ms passes while the request waits for the worker", async () => {
    // The request ahead must still be running when the queued one's 50 ms pass: on a loaded machine it can
    // end sooner after its start was seen, and then the queued one rightly starts; such a try says nothing
    // and is made again (at most five times).
    let queued: CallResult | undefined;
    let ahead: CallResult | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      const blocker = client.call({ tenantId: "a", sampling: { maxTokens: 200 } });
      await waitForMetric(service.metricsUrl, 'twig_running_requests{model="tiny"}', (v) => v >= 1);
      queued = await client.call({ tenantId: "late", deadlineMs: 50 });
      ahead = await blocker;
      if (ahead.endedAt > queued.sentAt + 50) break;
      console.log(`try ${attempt + 1}: the request ahead ended before the queued one's deadline; again`);
    }
    if (!queued || !ahead) throw new Error("unreachable");
    expect(queued.code).toBe(Code.DeadlineExceeded);
    expect(queued.startedAt).toBeUndefined(); // it never reached a worker
    // and it ended while the only worker was still busy with the request ahead of it
    expect(ahead.code).toBe("OK");
    expect(queued.endedAt).toBeLessThan(ahead.endedAt);
  }, 60_000);

  it("honours a grpc-js deadline and stays able to serve", async () => {
    const stub = grpcInferenceStub(service.port);
    const png = client.request().image?.source.value;
    const status = await new Promise<number>((resolve) => {
      const call = stub.generate(
        {
          model: "tiny",
          image: { data: png },
          conversation: { messages: [{ role: "user", content: "describe the picture" }] },
          sampling: { maxTokens: 120 },
          acceleration: { mode: "MODE_BASE" },
        },
        { deadline: Date.now() + Math.max(1, Math.round(longMs / 4)) },
      );
      call.on("data", () => {});
      call.on("error", (e: grpc.ServiceError) => resolve(e.code));
      call.on("end", () => resolve(grpc.status.OK));
    });
    stub.close();
    expect(status).toBe(grpc.status.DEADLINE_EXCEEDED);
    const after: CallResult = await client.call({ sampling: { maxTokens: 4 } });
    expect(after.code).toBe("OK");
  }, 60_000);
});

describe("scheduling with continuous batching on", () => {
  const LANES = 2;
  let batching: GpuServiceProcess & { modelDir: string };
  let batchingClient: ReturnType<typeof serviceClient>;
  beforeAll(async () => {
    const png = client.request().image?.source.value as Uint8Array;
    batching = await startTinyModelService(
      0,
      6,
      { TWIG_MAX_QUEUE: String(MAX_QUEUE), TWIG_MAX_BATCH: String(LANES) },
      { alwaysTiny: true },
    );
    batchingClient = serviceClient(batching.port, png);
  }, 120_000);
  afterAll(async () => {
    await batching?.stop();
  });

  it("serves a quiet tenant's request before the rest of a busy tenant's queued burst, lane by lane", async () => {
    await expectFair(batching, batchingClient, LANES, 8);
  }, 60_000);
});
