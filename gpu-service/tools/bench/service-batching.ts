/**
 * `npm run bench -- service --batch B`: continuous batching in the real GPU service. The service
 * runs twice on the same model (default: the demo model), with `--workers` engine workers (default
 * one) of `--threads` intra-op threads each, first one request at a time (TWIG_MAX_BATCH=1), then batching up to B; each mode (`base`,
 * `ttp-only`, `twig` by default) is called by 1, 4, 16 and 32 concurrent streams, each stream
 * sending its requests one after another (pictures of the demo model's test split, "describe the
 * picture ."; at least `--min-requests` a level, default 16, so that the one-stream level is not two
 * requests), after `--warmup` requests per mode one after another (default 8: enough that the
 * draft policy has tried its caps for a lone sequence, so that the one-stream level measures it
 * settled, not exploring). The levels are swept `--repeat` times (default once); at each level the
 * modes run one after another, in reverse order every other sweep, so that two modes are compared
 * on figures taken a minute apart at most, not a whole sweep apart, on a machine whose speed drifts.
 * Prints one table per mode: aggregate tokens per second (the median of the sweeps) without and with
 * batching, the batched figure as a ratio to the one-stream figure with batching and to the one
 * without (one request at a time), and time to first token and inter-token latency p50/p99 with
 * batching. Then where the CPU went at each level with batching,
 * in cores (CPU seconds over wall seconds), from the service's metrics scraped before and after the
 * level: the service process in all, its engine worker threads (`twig_engine_worker_cpu_seconds_total`)
 * and their time waiting for a core (`..._runqueue_seconds_total`; Linux only), and this benchmark's
 * own client. On a machine with as many cores as workers, what the rest of the service and the client
 * take is what the workers lack. Last, with several modes, each mode's batched figure over the first
 * mode's at the same level, sweep by sweep. Speed figures are only comparable within one run.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { MODE_NUMBER } from "@twigserve/proto/twigvlm/v1/names.js";
import type { Mode } from "../../src/engine/plan.js";
import { type BatchingBenchArgs, benchModelDir, DESCRIBE, testPictures } from "./batch-workload.js";
import { startServiceProcess } from "./service-process.js";
import { percentile as pct, timedGenerate } from "./timed-generate.js";

interface Level {
  tokPerS: number;
  ttft: number[];
  itl: number[];
  /** Cores used over the level (CPU seconds / wall seconds); NaN where unknown. */
  cores: { service: number; workers: number; waiting: number; client: number };
}

/** CPU seconds so far: the service process's, and its engine workers' running and waiting (summed). */
async function cpuSeconds(metricsUrl: string | undefined) {
  const sum = (lines: string[], name: string) => {
    const xs = lines.filter((l) => l.startsWith(name)).map((l) => Number(l.slice(l.lastIndexOf(" ") + 1)));
    return xs.length > 0 ? xs.reduce((a, b) => a + b, 0) : Number.NaN;
  };
  if (!metricsUrl) return { service: Number.NaN, workers: Number.NaN, waiting: Number.NaN };
  const lines = (await (await fetch(metricsUrl)).text()).split("\n");
  return {
    service: sum(lines, "process_cpu_seconds_total "),
    workers: sum(lines, "twig_engine_worker_cpu_seconds_total{"),
    waiting: sum(lines, "twig_engine_worker_runqueue_seconds_total{"),
  };
}

export interface ServiceBatchingArgs extends BatchingBenchArgs {
  /** Engine workers of the service, each batching up to `batch`. */
  workers: number;
  /** Requests per mode, one after another, before the levels are timed. */
  warmup: number;
  /** Requests a level sends at least (its streams send more each when perStream falls short). */
  minRequests: number;
  /** Sweeps over the levels, one after another (the figures are their medians). */
  repeat: number;
}

/** The middle value (the mean of the middle two for an even count). */
function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Requests each stream of a level sends: `perStream`, or more, so that the level sends at least `minRequests`. */
function requestsPerStream(args: ServiceBatchingArgs, streams: number): number {
  return Math.max(args.perStream, Math.ceil(args.minRequests / streams));
}

export async function benchServiceBatching(args: ServiceBatchingArgs): Promise<void> {
  const modelDir = benchModelDir(args.model);
  const scratch = mkdtempSync(join(tmpdir(), "twigserve-bench-"));
  const modelsDir = join(scratch, "models");
  mkdirSync(modelsDir);
  symlinkSync(modelDir, join(modelsDir, "bench"));
  const pictures = testPictures(args.pictures);

  const measure = async (maxBatch: number): Promise<Map<Mode, Map<number, Level[]>>> => {
    const { port, child, metricsUrl } = await startServiceProcess(modelsDir, {
      TWIG_ENGINE_WORKERS: String(args.workers),
      TWIG_ENGINE_THREADS: String(args.threads),
      TWIG_MAX_QUEUE: "1000",
      TWIG_MAX_BATCH: String(maxBatch),
      ...(args.prefillRows === undefined ? {} : { TWIG_PREFILL_ROWS: String(args.prefillRows) }),
    });
    const client = createClient(
      InferenceService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }),
    );
    const call = (picture: Uint8Array, mode: Mode) => {
      const req = create(GenerateRequestSchema, {
        model: "bench",
        tenantId: "bench",
        image: { source: { case: "data", value: picture } },
        input: { case: "conversation", value: { messages: [{ role: "user", content: DESCRIBE }] } },
        sampling: { maxTokens: args.maxTokens },
        acceleration: { mode: MODE_NUMBER[mode] },
      });
      return timedGenerate(client, req);
    };
    const level = async (mode: Mode, streams: number): Promise<Level> => {
      const ttft: number[] = [];
      const itl: number[] = [];
      let tokens = 0;
      const cpu0 = await cpuSeconds(metricsUrl);
      const client0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: streams }, async (_, s) => {
          const n = requestsPerStream(args, streams);
          for (let k = 0; k < n; k++) {
            const r = await call(pictures[(s * n + k) % pictures.length], mode);
            ttft.push(r.ttft);
            itl.push(...r.gaps);
            tokens += r.tokens;
          }
        }),
      );
      const wall = (performance.now() - t0) / 1000;
      const client = process.cpuUsage(client0);
      const cpu1 = await cpuSeconds(metricsUrl);
      return {
        tokPerS: tokens / wall,
        ttft,
        itl,
        cores: {
          service: (cpu1.service - cpu0.service) / wall,
          workers: (cpu1.workers - cpu0.workers) / wall,
          waiting: (cpu1.waiting - cpu0.waiting) / wall,
          client: (client.user + client.system) / 1e6 / wall,
        },
      };
    };
    // every mode warmed up first; then each sweep runs the levels in turn and, at each level, every
    // mode one after another (the order reversed every other sweep), so that the modes of one level
    // are timed side by side, not minutes apart
    const results = new Map<Mode, Map<number, Level[]>>(args.modes.map((m) => [m, new Map()]));
    try {
      for (const mode of args.modes)
        for (let k = 0; k < Math.max(1, args.warmup); k++) await call(pictures[k % pictures.length], mode);
      for (let sweep = 0; sweep < args.repeat; sweep++)
        for (const streams of args.levels) {
          const order = sweep % 2 === 0 ? args.modes : [...args.modes].reverse();
          for (const mode of order) {
            const byLevel = results.get(mode) as Map<number, Level[]>;
            byLevel.set(streams, [...(byLevel.get(streams) ?? []), await level(mode, streams)]);
          }
        }
    } finally {
      child.kill("SIGTERM");
    }
    return results;
  };

  console.log(
    `bench service (batching): ${basename(modelDir)}, ${args.workers} engine worker(s) x ${args.threads} thread(s), up to ${args.maxTokens} tokens per request (greedy), ` +
      `${args.perStream} requests per stream (at least ${args.minRequests} a level) after ${args.warmup} per mode, one request at a time vs batching up to ${args.batch}`,
  );
  try {
    const off = await measure(1);
    const on = await measure(args.batch);
    const sweeps = (r: Map<Mode, Map<number, Level[]>>, mode: Mode, streams: number) => r.get(mode)?.get(streams) ?? [];
    /** A level's sweeps as one: the median throughput, every request's latencies, the mean cores. */
    const merged = (ls: Level[]): Level | undefined => {
      if (ls.length === 0) return undefined;
      const mean = (f: (c: Level["cores"]) => number) => ls.reduce((a, l) => a + f(l.cores), 0) / ls.length;
      return {
        tokPerS: median(ls.map((l) => l.tokPerS)),
        ttft: ls.flatMap((l) => l.ttft),
        itl: ls.flatMap((l) => l.itl),
        cores: {
          service: mean((c) => c.service),
          workers: mean((c) => c.workers),
          waiting: mean((c) => c.waiting),
          client: mean((c) => c.client),
        },
      };
    };
    const each = (ls: Level[]) => (ls.length > 1 ? `  (${ls.map((l) => l.tokPerS.toFixed(0)).join(", ")})` : "");
    for (const mode of args.modes) {
      console.log(
        `\n  ${mode}${args.repeat > 1 ? ` (tok/s: the median of ${args.repeat} sweeps, each sweep's in brackets)` : ""}\n  streams   tok/s alone   tok/s batched   batched / 1 stream: batched, alone   TTFT ms p50 / p99   inter-token ms p50 / p99`,
      );
      const one = merged(sweeps(on, mode, args.levels[0]))?.tokPerS ?? Number.NaN;
      const oneAlone = merged(sweeps(off, mode, args.levels[0]))?.tokPerS ?? Number.NaN;
      for (const streams of args.levels) {
        const a = merged(sweeps(off, mode, streams));
        const b = merged(sweeps(on, mode, streams));
        if (!a || !b) continue;
        const two = (xs: number[], d: number) => `${pct(xs, 50).toFixed(d)} / ${pct(xs, 99).toFixed(d)}`;
        console.log(
          `  ${String(streams).padStart(7)}   ${a.tokPerS.toFixed(1).padStart(11)}   ${b.tokPerS.toFixed(1).padStart(13)}   ${`${(b.tokPerS / one).toFixed(2)}, ${(b.tokPerS / oneAlone).toFixed(2)}`.padStart(34)}   ${two(b.ttft, 0).padStart(17)}   ${two(b.itl, 2).padStart(24)}${each(sweeps(off, mode, streams))}${each(sweeps(on, mode, streams))}`,
        );
      }
      console.log(
        `  with batching, cores used (CPU s / wall s): streams   service process   its engine workers   workers waiting for a core   this client`,
      );
      for (const streams of args.levels) {
        const c = merged(sweeps(on, mode, streams))?.cores;
        if (!c) continue;
        console.log(
          `  ${String(streams).padStart(47)}   ${c.service.toFixed(2).padStart(15)}   ${c.workers.toFixed(2).padStart(18)}   ${c.waiting.toFixed(2).padStart(26)}   ${c.client.toFixed(2).padStart(11)}`,
        );
      }
    }
    // the modes of one level were timed side by side in each sweep: their ratio, sweep by sweep
    const [first, ...others] = args.modes;
    if (others.length > 0) {
      console.log(
        `\n  with batching, each mode over ${first} at the same level (the median of the sweeps' ratios; each sweep's in brackets)`,
      );
      console.log(`  streams   ${others.map((m) => m.padStart(22)).join("   ")}`);
      for (const streams of args.levels) {
        const base = sweeps(on, first, streams);
        const cells = others.map((m) => {
          const rs = sweeps(on, m, streams).map((l, i) => l.tokPerS / (base[i]?.tokPerS ?? Number.NaN));
          const text = `${median(rs).toFixed(2)}${rs.length > 1 ? ` (${rs.map((r) => r.toFixed(2)).join(", ")})` : ""}`;
          return text.padStart(22);
        });
        console.log(`  ${String(streams).padStart(7)}   ${cells.join("   ")}`);
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
