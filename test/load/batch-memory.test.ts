/**
 * Load: continuous batching's memory in a real GPU service process on the demo model, over real
 * gRPC (grpc-js), with a KV budget small enough that memory, not TWIG_MAX_BATCH, bounds the batch.
 *
 * - A burst of 64 streams at once (16 lanes in the worker, the rest in the scheduler's queue): every
 *   one ends OK with the tokens it gets alone (no out-of-memory, no refusal); in every scrape of
 *   /metrics the worker's KV (`twig_kv_bytes`) is within its budget while more than one sequence
 *   runs; the worker held requests back for memory with free lanes (`twig_batch_waiting` above 0
 *   while `twig_batch_size` was below the lanes) and preempted some (`twig_preemptions_total`). The
 *   order they started in is printed beside the order the service received them (each one's log
 *   line: its end less its duration, to the millisecond; HTTP/2 flow control delivers a burst's
 *   bodies out of the order they were sent in, and the worker decodes up to 16 pictures at once), not
 *   asserted: that admission follows arrival is shown where arrival is known exactly
 *   (test/node/engine-runtime/batch-memory.test.ts).
 * - 500 requests, 24 at a time, after 240 of warm-up (the allocators' pools fill over the first few
 *   hundred): the process's resident memory (`process_resident_memory_bytes`), read between waves,
 *   stays within a bound of its value after the warm-up (a leak of one request's prompt caches, about
 *   4 MB on this model, per request would pass it by far); the series is printed.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, repoRoot, startDemoService } from "../support/gpu-service.js";
import {
  type GrpcAsk,
  grpcGenerate,
  grpcInferenceStub,
  readMetrics,
  sampleMetrics,
  waitForMetric,
} from "../support/service-client.js";

const LANES = 16;
const BUDGET = 24 * 1024 ** 2;
const WORKER = '{model="demo",worker="0"}';
const SERIES = [
  `twig_batch_size${WORKER}`,
  `twig_batch_waiting${WORKER}`,
  `twig_kv_bytes${WORKER}`,
  'twig_preemptions_total{model="demo"}',
  'twig_queue_depth{model="demo"}',
];
const MODES = ["MODE_TWIG", "MODE_TTP_ONLY", "MODE_SSD_ONLY", "MODE_TWIG", "MODE_FASTV", "MODE_BASE"];

const picture = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "test", `${String(i % 100).padStart(4, "0")}.png`));

/** The i-th request: pictures, questions, modes and budgets varied together. */
const ask = (i: number, maxTokens: number): GrpcAsk => ({
  model: "demo",
  image: picture(i),
  question: i % 4 === 3 ? "what colour is the circle ?" : "describe the picture .",
  mode: MODES[i % MODES.length],
  retainBudget: [16, 32][i % 2],
  maxTokens,
});

let service: GpuServiceProcess;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
let stub: any;

beforeAll(async () => {
  service = await startDemoService({
    TWIG_MAX_BATCH: String(LANES),
    TWIG_KV_BUDGET_BYTES: String(BUDGET),
    TWIG_MAX_QUEUE: "64",
  });
  stub = grpcInferenceStub(service.port);
});
afterAll(async () => {
  stub?.close();
  await service?.stop();
});

describe("batching memory under load (demo model)", () => {
  it("a burst of 64 streams stays within the KV budget, queues for memory and ends as each alone", async () => {
    const asks = Array.from({ length: 64 }, (_, i) => ({ ...ask(i, 48), requestId: `burst-${i}` }));
    const alone: string[][] = [];
    for (const a of asks) {
      const r = await grpcGenerate(stub, a);
      expect(r.code).toBe(0);
      alone.push(r.ids);
    }
    const [preempted0] = await readMetrics(service.metricsUrl, [SERIES[3]]);
    const started: number[] = [];
    const burst = Promise.all(asks.map((a, i) => grpcGenerate(stub, a, { onStarted: () => started.push(i) })));
    const samples = await sampleMetrics(service.metricsUrl, SERIES, burst);
    const results = await burst;

    const peak = (k: number) => Math.max(...samples.map((s) => s[k]));
    const crowded = samples.filter(([size]) => size > 1);
    const heldBack = samples.filter(([size, waiting]) => waiting > 0 && size < LANES);
    const preempted = peak(3) - preempted0;
    // the order the service received them in, from their log lines (ms: a tie keeps the order sent)
    const arrival = new Map<number, number>();
    for (const line of service.output().split("\n")) {
      if (!line.includes('"msg":"generate"') || !line.includes('"burst-')) continue;
      const l = JSON.parse(line) as { requestId: string; time: number; durationMs: number };
      arrival.set(Number(l.requestId.slice("burst-".length)), l.time - l.durationMs);
    }
    const received = [...arrival.keys()].sort((a, b) => (arrival.get(a) ?? 0) - (arrival.get(b) ?? 0) || a - b);
    const displacement = started.map((r, place) => Math.abs(place - received.indexOf(r)));
    const median = [...displacement].sort((a, b) => a - b)[32];
    const equal = results.filter((r, i) => r.code === 0 && r.ids.join() === alone[i].join()).length;
    console.log(
      `64-stream burst, KV budget ${BUDGET} bytes, ${LANES} lanes: ${samples.length} scrapes; batch size up to ${peak(0)}, ` +
        `held for memory up to ${peak(1)}, scheduler queue up to ${peak(4)}, KV up to ${Math.max(...crowded.map((s) => s[2]))} bytes ` +
        `with more than one running; ${preempted} preemptions; ${equal} of 64 equal to their lone answer; ` +
        `received in the order ${received.join(" ")}; started in the order ${started.join(" ")} ` +
        `(places from the order received: median ${median}, most ${Math.max(...displacement)})`,
    );
    expect(results.map((r) => r.code)).toEqual(Array(64).fill(0));
    results.forEach((r, i) => {
      expect(r.ids, `request ${i} (${asks[i].mode})`).toEqual(alone[i]);
    });
    for (const [, , kv] of crowded) expect(kv).toBeLessThanOrEqual(BUDGET);
    expect(peak(0)).toBeGreaterThan(1);
    expect(peak(0)).toBeLessThan(LANES); // memory bounded the batch, not its lanes
    expect(heldBack.length).toBeGreaterThan(0);
    expect(peak(4)).toBeGreaterThan(0); // the scheduler queued what the lanes could not take
    expect(preempted).toBeGreaterThan(0);
    expect(received.length).toBe(64);
    expect(started.length).toBe(64);
    expect(await waitForMetric(service.metricsUrl, SERIES[0], (v) => v === 0)).toBe(0);
  }, 900_000);

  it("keeps the process's resident memory flat over 500 requests", async () => {
    const RSS = "process_resident_memory_bytes";
    const WAVE = 24;
    const WARM = 240;
    const TOTAL = WARM + 500;
    const rss: { after: number; bytes: number }[] = [];
    let sent = 0;
    while (sent < TOTAL) {
      const wave = Array.from({ length: Math.min(WAVE, TOTAL - sent) }, (_, i) =>
        grpcGenerate(stub, ask(sent + i, 24)),
      );
      const codes = (await Promise.all(wave)).map((r) => r.code);
      expect(codes).toEqual(Array(wave.length).fill(0));
      sent += wave.length;
      // between waves: the batch is empty (its caches back to their empty size)
      await waitForMetric(service.metricsUrl, SERIES[0], (v) => v === 0);
      const [bytes] = await readMetrics(service.metricsUrl, [RSS]);
      rss.push({ after: sent, bytes });
    }
    const warm = rss.filter((r) => r.after >= WARM);
    const base = warm[0].bytes;
    const most = Math.max(...warm.map((r) => r.bytes));
    const mb = (b: number) => (b / 1024 ** 2).toFixed(1);
    console.log(
      `resident memory over ${TOTAL} requests (MB, after 24, 48, ...): ${rss.map((r) => mb(r.bytes)).join(" ")}; ` +
        `after the warm-up (${warm[0].after} requests) ${mb(base)}, at most ${mb(most)} (+${mb(most - base)}), at the end ${mb(rss.at(-1)?.bytes ?? 0)}`,
    );
    expect(rss.every((r) => Number.isFinite(r.bytes) && r.bytes > 0)).toBe(true);
    // flat: at most 10% (and 64 MB) above the warm value, against about 4 MB per request for a leak of prompt caches
    expect(most - base).toBeLessThanOrEqual(Math.min(0.1 * base, 64 * 1024 ** 2));
  }, 900_000);
});
