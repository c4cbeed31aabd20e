/**
 * How long a delta takes from the GPU service to a streaming HTTP client
 * through the edge, against a Connect client reading the service directly, at
 * several numbers of concurrent streams, side by side in one run. A
 * pass-through proxy between the service and both clients notes the moment
 * each Delta frame leaves the service (per request id); each client notes the
 * moment the matching chunk arrives (same text, same order within its stream).
 * Both clocks are this process's performance.now().
 *
 *   npx tsx test/bench/edge-stream-latency.ts [--model-dir DIR] [--image PNG] [--question TEXT]
 *     [--streams 1,16] [--rounds N] [--max-tokens N] [--paced MS]
 *
 * Without --model-dir it writes and serves a tiny random model. With --paced,
 * the scripted GPU service (test/support/scripted-gpu-service.ts) stands in
 * for the model and emits 40 deltas MS apart on every stream at once: the
 * edge's own delay without an engine competing for the CPU. Prints a table.
 */

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { writeTinyModel } from "../../gpu-service/tools/make-tiny/tiny-model.js";
import { startEdgeDev } from "../support/edge-dev.js";
import { type FrameProxy, startFrameProxy, type TimedDelta } from "../support/frame-proxy.js";
import { startGpuService } from "../support/gpu-service.js";
import { startScriptedGpuService } from "../support/scripted-gpu-service.js";
import { quantile, streamChat } from "../support/sse-client.js";
import { userWorkerUrl } from "./user-worker-url.js";

export interface EdgeLatencyOptions {
  /** A model directory to serve; absent: a tiny random model (or the scripted service with `pacedMs`). */
  modelDir?: string;
  /** Numbers of concurrent streams to measure at. */
  streams: number[];
  /** Rounds per level: each round runs that many streams directly, then as many through the edge. */
  rounds: number;
  maxTokens: number;
  /** The scripted service emits 40 deltas this many ms apart instead of a model. */
  pacedMs?: number;
  /** The picture and the question (default: a plain red picture, "describe the picture"). */
  image?: Buffer;
  question?: string;
}

/** Connect client on the service; SSE through wrangler dev; SSE from the user worker's own socket (no dev proxy). */
export type Path = "direct" | "edge" | "worker";

const PATH_NAMES: Record<Path, string> = {
  direct: "Connect client, no edge",
  edge: "edge under wrangler dev, SSE",
  worker: "edge, user worker's own socket (no wrangler proxy), SSE",
};

export interface EdgeLatencyRow {
  streams: number;
  path: Path;
  /** Streams that did not complete (for example wrangler dev's "worker restarted mid-request" 503). */
  failed: number;
  deltas: number;
  /** Milliseconds from the service emitting a delta to the client receiving it. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

const ADMIN_TOKEN = "bench-admin-token";

/** Pairs a stream's received chunks with what the service emitted for it; throws when they differ. */
function pair(received: TimedDelta[], emitted: TimedDelta[] | undefined, into: number[], what: string): void {
  const sent = emitted ?? [];
  if (received.length !== sent.length || received.some((r, i) => r.text !== sent[i].text))
    throw new Error(`${what}: the ${received.length} received chunks do not match the ${sent.length} emitted deltas`);
  into.push(...received.map((r, i) => r.at - sent[i].at));
}

function row(streams: number, path: Path, latencies: number[], failed: number): EdgeLatencyRow {
  return {
    streams,
    path,
    failed,
    deltas: latencies.length,
    p50: quantile(latencies, 0.5),
    p90: quantile(latencies, 0.9),
    p99: quantile(latencies, 0.99),
    max: Math.max(...latencies),
  };
}

/** Runs the measurement; returns one row per level and path. */
export async function measureEdgeLatency(opts: EdgeLatencyOptions): Promise<EdgeLatencyRow[]> {
  let scratch: string | undefined;
  let modelDir = opts.modelDir;
  if (!modelDir && opts.pacedMs === undefined) {
    scratch = mkdtempSync(join(tmpdir(), "twigserve-bench-"));
    modelDir = join(scratch, "tiny");
    writeTinyModel(modelDir, 3, "hf");
  }
  const model = modelDir ? basename(modelDir) : "scripted";
  const png =
    opts.image ??
    (await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: 220, g: 40, b: 40 } } })
      .png()
      .toBuffer());
  const gpu = modelDir
    ? await startGpuService(0, {
        TWIG_MODELS_DIR: dirname(modelDir),
        TWIG_DEFAULT_MODEL: model,
        TWIG_ENGINE_THREADS: "1",
        TWIG_MAX_QUEUE: "256",
      })
    : await startScriptedGpuService({ pacedIntervalMs: opts.pacedMs }).then((s) => ({
        ...s,
        stop: s.close,
      }));
  const proxy: FrameProxy = await startFrameProxy(gpu.url);
  const edge = await startEdgeDev({
    GPU_SERVICE_URL: gpu.url,
    MODEL_ROUTES: JSON.stringify({ [model]: [proxy.url] }),
    ADMIN_TOKEN,
  });
  const question = modelDir ? (opts.question ?? "describe the picture") : "paced";
  const rows: EdgeLatencyRow[] = [];
  try {
    const res = await fetch(`${edge.url}/admin/tenants`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({
        name: "bench",
        requests_per_minute: 100000,
        tokens_per_minute: 1e9,
        concurrent_streams: 1000,
      }),
    });
    const { id } = (await res.json()) as { id: string };
    const keyRes = await fetch(`${edge.url}/admin/tenants/${id}/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const { key } = (await keyRes.json()) as { key: string };
    const connect = createClient(InferenceService, createConnectTransport({ baseUrl: proxy.url, httpVersion: "1.1" }));
    const directStream = async (requestId: string): Promise<TimedDelta[]> => {
      const got: TimedDelta[] = [];
      for await (const ev of connect.generate(
        create(GenerateRequestSchema, {
          model,
          requestId,
          image: { source: { case: "data", value: png } },
          input: { case: "conversation", value: { messages: [{ role: "user", content: question }] } },
          sampling: { maxTokens: opts.maxTokens, temperature: 0 },
          acceleration: { mode: Mode.TWIG },
        }),
      ))
        if (ev.event.case === "delta" && ev.event.value.text)
          got.push({ text: ev.event.value.text, at: performance.now() });
      return got;
    };
    const worker = await userWorkerUrl(edge);
    let edgeLogShown = false;
    /** A stream through the edge at `base`; undefined when it did not complete (counted, not measured). */
    const edgeStream = async (requestId: string, base: string): Promise<TimedDelta[] | undefined> => {
      const got: TimedDelta[] = [];
      const r = await streamChat(
        base,
        key,
        {
          model,
          max_tokens: opts.maxTokens,
          temperature: 0,
          messages: [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url: `data:image/png;base64,${png.toString("base64")}` } },
                { type: "text", text: question },
              ],
            },
          ],
        },
        { requestId, onChunk: (text) => got.push({ text, at: performance.now() }) },
      );
      if (r.status !== 200 || !r.done) {
        console.warn(
          `${requestId}: did not complete (${r.status} ${JSON.stringify(r.errorBody ?? r.error ?? r.failure)}); counted as failed`,
        );
        if (!edgeLogShown) {
          edgeLogShown = true;
          console.warn(`the edge's last log lines:\n${edge.output().split("\n").slice(-20).join("\n")}`);
        }
        return undefined;
      }
      return got;
    };
    const paths: Path[] = worker ? ["direct", "edge", "worker"] : ["direct", "edge"];
    for (const streams of opts.streams) {
      const latencies: Record<Path, number[]> = { direct: [], edge: [], worker: [] };
      const failed: Record<Path, number> = { direct: 0, edge: 0, worker: 0 };
      for (let round = 0; round < opts.rounds; round++) {
        for (const path of paths) {
          proxy.reset();
          const ids = Array.from({ length: streams }, (_, i) => `${path}-${streams}-${round}-${i}`);
          const received = await Promise.all(
            ids.map((id) =>
              path === "direct" ? directStream(id) : edgeStream(id, path === "edge" ? edge.url : (worker as string)),
            ),
          );
          for (const [i, id] of ids.entries()) {
            const got = received[i];
            if (got) pair(got, proxy.deltas.get(id), latencies[path], id);
            else failed[path]++;
          }
        }
      }
      for (const path of paths) rows.push(row(streams, path, latencies[path], failed[path]));
    }
  } finally {
    await edge.stop();
    await proxy.close();
    await gpu.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
  return rows;
}

/** The rows as a markdown table, with the edge's added p50 per level. */
export function latencyTable(rows: EdgeLatencyRow[]): string {
  const f = (x: number) => x.toFixed(2);
  const lines = [
    "| streams | path | deltas | p50 ms | p90 ms | p99 ms | max ms | streams failed |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows)
    lines.push(
      `| ${r.streams} | ${PATH_NAMES[r.path]} | ${r.deltas} | ${f(r.p50)} | ${f(r.p90)} | ${f(r.p99)} | ${f(r.max)} | ${r.failed} |`,
    );
  for (const path of ["edge", "worker"] as const) {
    const added = [...new Set(rows.map((r) => r.streams))].flatMap((n) => {
      const d = rows.find((r) => r.streams === n && r.path === "direct");
      const e = rows.find((r) => r.streams === n && r.path === path);
      return d && e ? [`${f(e.p50 - d.p50)} ms at ${n} stream(s)`] : [];
    });
    if (added.length > 0) lines.push("", `${PATH_NAMES[path]} adds at the median per delta: ${added.join(", ")}`);
  }
  return lines.join("\n");
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      "model-dir": { type: "string" },
      streams: { type: "string", default: "1,16" },
      rounds: { type: "string", default: "3" },
      "max-tokens": { type: "string", default: "64" },
      paced: { type: "string" },
      image: { type: "string" },
      question: { type: "string" },
    },
  });
  const opts: EdgeLatencyOptions = {
    modelDir: args["model-dir"] ? resolve(args["model-dir"]) : undefined,
    streams: (args.streams ?? "1").split(",").map(Number),
    rounds: Number(args.rounds),
    maxTokens: Number(args["max-tokens"]),
    pacedMs: args.paced === undefined ? undefined : Number(args.paced),
    image: args.image ? readFileSync(args.image) : undefined,
    question: args.question,
  };
  const rows = await measureEdgeLatency(opts);
  const what =
    opts.pacedMs !== undefined
      ? `scripted service, 40 deltas ${opts.pacedMs} ms apart per stream`
      : `model ${opts.modelDir ? basename(opts.modelDir) : "tiny (random)"}, up to ${opts.maxTokens} tokens, greedy`;
  console.log(`\n${what}, ${opts.rounds} round(s) per level; latency = client receipt - GPU service emission\n`);
  console.log(latencyTable(rows));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
