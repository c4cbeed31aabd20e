/**
 * Continuous batching in the real service process (TWIG_MAX_BATCH), on the demo model over real
 * gRPC: requests of mixed modes, budgets and lengths sent together stream the tokens each gets
 * when it runs alone; in a batch, one request cancelled by its caller after its first delta and one
 * past its deadline end so (CANCELLED, DEADLINE_EXCEEDED) while the others' tokens stay as they
 * were alone. (A demo answer ends at EOS within a few hundred ms here, so the deadline is 1 ms: a
 * longer one is sometimes met.) The worker's metrics follow: the batch size scraped while they run
 * is above 1 and never above TWIG_MAX_BATCH, KV bytes are held, and both fall back when it is over;
 * the worker thread's CPU time grows across the batch (its run-queue time is reported beside it),
 * and so do its garbage collections (minor ones: a batch allocates little that lives).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, repoRoot, startDemoService } from "../../support/gpu-service.js";
import {
  type GrpcAsk,
  grpcGenerate,
  grpcInferenceStub,
  readMetrics,
  sampleMetrics,
  waitForMetric,
} from "../../support/service-client.js";

const picture = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "test", `${String(i).padStart(4, "0")}.png`));

let service: GpuServiceProcess;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
let stub: any;

beforeAll(async () => {
  service = await startDemoService({
    TWIG_MAX_BATCH: "6",
  });
  stub = grpcInferenceStub(service.port);
}, 120_000);
afterAll(async () => {
  stub?.close();
  await service?.stop();
});

type Call = Omit<GrpcAsk, "model">;

const generate = (c: Call, cancelAfterDeltas?: number) =>
  grpcGenerate(stub, { model: "demo", ...c }, { cancelAfterDeltas });

const WORKER = '{model="demo",worker="0"}';
const SERIES = ["twig_batch_size", "twig_batch_waiting", "twig_kv_bytes", "twig_kv_budget_bytes"].map(
  (m) => m + WORKER,
);

const MODES = ["MODE_TWIG", "MODE_TTP_ONLY", "MODE_BASE", "MODE_SSD_ONLY"];
const calls: Call[] = Array.from({ length: 10 }, (_, i) => ({
  image: picture(20 + i),
  question: i % 3 === 0 ? "what colour is the circle ?" : "describe the picture .",
  mode: MODES[i % MODES.length],
  retainBudget: [0, 16, 32][i % 3],
  maxTokens: 8 + ((i * 11) % 40),
}));

describe("continuous batching in the service", () => {
  it("streams every request of a mixed batch the tokens it gets alone, also when one is cancelled and one times out", async () => {
    const alone: { ids: string[]; code: number }[] = [];
    for (const c of calls) alone.push(await generate(c));
    for (const a of alone) {
      expect(a.code).toBe(0);
      expect(a.ids.length).toBeGreaterThan(0);
    }
    const THREAD = [
      `twig_engine_worker_cpu_seconds_total${WORKER}`,
      `twig_engine_worker_runqueue_seconds_total${WORKER}`,
    ];
    const MINOR = '{model="demo",worker="0",kind="minor"}';
    const GC = [`twig_engine_worker_gc_total${MINOR}`, `twig_engine_worker_gc_seconds_total${MINOR}`];
    const [gcs0, gcSeconds0] = await readMetrics(service.metricsUrl, GC);
    const [idle] = await readMetrics(service.metricsUrl, [`twig_kv_bytes${WORKER}`]);
    const [cpu0, wait0] = await readMetrics(service.metricsUrl, THREAD);
    expect(cpu0).toBeGreaterThan(0); // loading the model and the requests above
    const running = Promise.all(calls.map((c) => generate(c)));
    const samples = await sampleMetrics(service.metricsUrl, SERIES, running);
    const together = await running;
    together.forEach((t, i) => {
      expect(t, `request ${i} (${calls[i].mode})`).toEqual(alone[i]);
    });
    const peak = (k: number) => Math.max(...samples.map((s) => s[k]));
    console.log(
      `batching metrics over ${samples.length} scrapes: batch size up to ${peak(0)}, waiting up to ${peak(1)}, KV up to ${peak(2)} bytes (${idle} idle)`,
    );
    for (const [size, waiting, kv, budget] of samples) {
      expect(size).toBeLessThanOrEqual(6);
      expect(size + waiting).toBeLessThanOrEqual(6); // the scheduler hands a worker at most TWIG_MAX_BATCH
      expect(kv).toBeLessThanOrEqual(budget);
      expect(budget).toBe(2 * 1024 ** 3);
    }
    expect(peak(0)).toBeGreaterThan(1);
    const [cpu1, wait1] = await readMetrics(service.metricsUrl, THREAD);
    expect(cpu1).toBeGreaterThan(cpu0);
    expect(wait1).toBeGreaterThanOrEqual(wait0);
    const [gcs1, gcSeconds1] = await readMetrics(service.metricsUrl, GC);
    expect(gcs1).toBeGreaterThan(gcs0); // the worker's own collections, counted by kind
    expect(gcSeconds1).toBeGreaterThan(gcSeconds0);
    expect(peak(2)).toBeGreaterThan(idle);
    expect(await waitForMetric(service.metricsUrl, SERIES[0], (v) => v === 0)).toBe(0);
    expect(await readMetrics(service.metricsUrl, SERIES.slice(1, 3))).toEqual([0, idle]);

    const long: Call = {
      image: picture(40),
      question: "describe the picture .",
      mode: "MODE_TWIG",
      retainBudget: 0,
      maxTokens: 200,
    };
    const [cancelled, late, ...rest] = await Promise.all([
      generate(long, 1),
      generate({ ...long, image: picture(41), deadlineMs: 1 }), // past its deadline in the queue or at its first step
      ...calls.slice(0, 4).map((c) => generate(c)),
    ]);
    expect(cancelled.code).toBe(1); // CANCELLED
    expect(late.code).toBe(4); // DEADLINE_EXCEEDED
    rest.forEach((t, i) => {
      expect(t).toEqual(alone[i]);
    });
  }, 300_000);
});
