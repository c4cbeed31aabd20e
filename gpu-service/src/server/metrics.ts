/**
 * Prometheus metrics, served on their own port (`/metrics`). The inference
 * service records each request here; nothing in the engine knows about them.
 */
import http from "node:http";
import client from "prom-client";
import { GC_KINDS, type GcTally, type ThreadTime } from "../engine/thread-time.js";

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const labelNames = ["model"] as const;
const histogram = (name: string, help: string) =>
  new client.Histogram({ name, help, labelNames, buckets, registers: [registry] });
const counter = (name: string, help: string) => new client.Counter({ name, help, labelNames, registers: [registry] });
const gauge = (name: string, help: string) => new client.Gauge({ name, help, labelNames, registers: [registry] });
/** A gauge per engine worker (`worker`: its number among the model's workers, kept by a replacement). */
const workerGauge = (name: string, help: string) =>
  new client.Gauge({ name, help, labelNames: ["model", "worker"] as const, registers: [registry] });

/** An engine worker's thread, read at each scrape (model-workers.ts adds each worker and removes it when it exits). */
export interface WorkerThread {
  labels: { model: string; worker: string };
  read: () => Promise<ThreadTime | undefined>;
  /** Its garbage collections so far. */
  readGc: () => Promise<GcTally | undefined>;
  /** What the last scrape read (the counters grow by the difference). */
  last?: ThreadTime;
  lastGc?: GcTally;
}
export const workerThreads = new Set<WorkerThread>();

// one read of every worker per scrape, shared by the counters that report it
let reading: Promise<void> | undefined;
const readWorkerThreads = () => {
  reading ??= Promise.all(
    [...workerThreads].map(async (w) => {
      const [now, gc] = await Promise.all([w.read(), w.readGc()]);
      if (!workerThreads.has(w)) return;
      if (now) {
        const last = w.last ?? { running: 0, waiting: 0 };
        metrics.workerCpu.inc(w.labels, Math.max(0, now.running - last.running));
        metrics.workerWaiting.inc(w.labels, Math.max(0, now.waiting - last.waiting));
        w.last = now;
      }
      if (gc) {
        for (const kind of GC_KINDS) {
          const last = w.lastGc?.[kind] ?? { count: 0, seconds: 0 };
          metrics.workerGc.inc({ ...w.labels, kind }, Math.max(0, gc[kind].count - last.count));
          metrics.workerGcSeconds.inc({ ...w.labels, kind }, Math.max(0, gc[kind].seconds - last.seconds));
        }
        w.lastGc = gc;
      }
    }),
  ).then(() => {
    reading = undefined;
  });
  return reading;
};
const workerCounter = (name: string, help: string) =>
  new client.Counter({
    name,
    help,
    labelNames: ["model", "worker"] as const,
    registers: [registry],
    collect: readWorkerThreads,
  });
const workerGcCounter = (name: string, help: string) =>
  new client.Counter({
    name,
    help,
    labelNames: ["model", "worker", "kind"] as const,
    registers: [registry],
    collect: readWorkerThreads,
  });

export const metrics = {
  ttft: histogram("twig_time_to_first_token_seconds", "Time from request to first token"),
  interToken: histogram("twig_inter_token_latency_seconds", "Time between streamed deltas"),
  e2e: histogram("twig_request_duration_seconds", "End-to-end request time"),
  queue: histogram("twig_queue_time_seconds", "Time waiting for an engine worker"),
  queueDepth: gauge("twig_queue_depth", "Requests waiting for a worker"),
  running: gauge("twig_running_requests", "Requests being generated"),
  promptTokens: counter("twig_prompt_tokens_total", "Prompt tokens (image expanded)"),
  generatedTokens: counter("twig_generated_tokens_total", "Generated tokens"),
  draftedTokens: counter("twig_drafted_tokens_total", "Tokens drafted by the twig"),
  acceptedTokens: counter("twig_accepted_tokens_total", "Drafted tokens accepted by the full model"),
  visualKept: counter("twig_visual_tokens_kept_total", "Visual tokens kept by pruning"),
  visualPruned: counter("twig_visual_tokens_pruned_total", "Visual tokens pruned"),
  workers: gauge("twig_engine_workers", "Engine worker threads up"),
  batchSize: workerGauge("twig_batch_size", "Sequences an engine worker decodes together (continuous batching)"),
  batchWaiting: workerGauge(
    "twig_batch_waiting",
    "Requests an engine worker has taken and holds until its batch's KV budget has room",
  ),
  kvBytes: workerGauge("twig_kv_bytes", "KV memory an engine worker's batch holds, in bytes"),
  kvBudgetBytes: workerGauge("twig_kv_budget_bytes", "KV memory an engine worker's batch may hold, in bytes"),
  batchPrefilling: workerGauge(
    "twig_batch_prefilling",
    "Requests whose prompt, longer than TWIG_PREFILL_ROWS, an engine worker is prefilling over several rounds",
  ),
  longPrefills: counter(
    "twig_long_prefills_total",
    "Prompts longer than TWIG_PREFILL_ROWS prefilled over several rounds of a batch, in chunks",
  ),
  preemptions: counter(
    "twig_preemptions_total",
    "Sequences preempted (their KV freed, to be refilled later) so that a batch stays within its KV budget",
  ),
  workerCpu: workerCounter(
    "twig_engine_worker_cpu_seconds_total",
    "Time an engine worker's thread has run on a CPU (Linux); beside wall time, how busy the worker is",
  ),
  workerWaiting: workerCounter(
    "twig_engine_worker_runqueue_seconds_total",
    "Time an engine worker's thread was ready to run but waited for a CPU (Linux): it grows when busy threads outnumber cores",
  ),
  workerGc: workerGcCounter(
    "twig_engine_worker_gc_total",
    "Garbage collections on an engine worker's thread, by kind (minor, major: full, incremental, weakcb)",
  ),
  workerGcSeconds: workerGcCounter(
    "twig_engine_worker_gc_seconds_total",
    "Time garbage collection paused an engine worker's thread, by kind (concurrent marking on other threads not included)",
  ),
  workerRestarts: counter("twig_engine_worker_restarts_total", "Engine workers started to replace one that died"),
  errors: new client.Counter({
    name: "twig_request_errors_total",
    help: "Failed requests by gRPC code",
    labelNames: ["model", "code"] as const,
    registers: [registry],
  }),
};

/** Serves /metrics on host:port; resolves with the bound port. */
export function serveMetrics(host: string, port: number): Promise<{ port: number; close: () => void }> {
  const server = http.createServer(async (req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": registry.contentType }).end(await registry.metrics());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const addr = server.address();
      resolve({ port: typeof addr === "object" && addr ? addr.port : port, close: () => server.close() });
    });
  });
}
