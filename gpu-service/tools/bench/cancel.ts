/**
 * `npm run bench -- cancel [--model DIR] [--rounds 60]`: the real GPU service
 * (one engine worker; default model: a tiny random model, which answers to
 * max_tokens) and a caller that cancels each request after two deltas, then
 * sends a short one. Prints how long the next request waited for the worker
 * against one decoding step and a whole request (a worker that did not stop
 * would make it wait for the rest of the cancelled one), and the service's
 * resident memory and main-thread heap every 15 rounds (after 10 to warm up).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { writeTinyModel } from "../make-tiny/tiny-model.js";
import { startServiceProcess } from "./service-process.js";

const WARM_UP = 10;

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024;

export async function benchCancel(args: { model?: string; rounds: number }): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), "twigserve-cancel-"));
  const modelDir = args.model ? resolve(args.model) : join(scratch, "tiny-model");
  if (!args.model) writeTinyModel(modelDir, 6, "hf");
  const modelsDir = join(scratch, "models");
  mkdirSync(modelsDir);
  symlinkSync(modelDir, join(modelsDir, "bench"));
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 10, g: 90, b: 200 } } })
    .png()
    .toBuffer();
  const service = await startServiceProcess(modelsDir, { TWIG_ENGINE_THREADS: "1", TWIG_ENGINE_WORKERS: "1" });
  const pid = service.child.pid as number;
  const baseUrl = `http://127.0.0.1:${service.port}`;
  const client = createClient(InferenceService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const heapMb = async () => {
    const text = service.metricsUrl ? await (await fetch(service.metricsUrl)).text() : "";
    return Number(/^nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1]) / 2 ** 20;
  };

  /** One call; `cancelAt` deltas in, the caller goes away. Times in ms from sending. */
  const call = async (maxTokens: number, cancelAt?: number) => {
    const ctrl = new AbortController();
    const req = create(GenerateRequestSchema, {
      model: "bench",
      image: { source: { case: "data", value: png } },
      input: { case: "conversation", value: { messages: [{ role: "user", content: "describe the picture" }] } },
      sampling: { maxTokens },
      acceleration: { mode: Mode.BASE },
    });
    const t0 = performance.now();
    let deltas = 0;
    let started = Number.NaN;
    let queueMs = Number.NaN;
    let decodeMs = Number.NaN;
    let tokens = 0;
    try {
      for await (const ev of client.generate(req, { signal: ctrl.signal })) {
        if (ev.event.case === "started") started = performance.now();
        if (ev.event.case === "delta" && ++deltas === cancelAt) ctrl.abort();
        if (ev.event.case === "finished") {
          queueMs = ev.event.value.stats?.queueMs ?? Number.NaN;
          decodeMs = ev.event.value.stats?.decodeMs ?? Number.NaN;
          tokens = ev.event.value.usage?.completionTokens ?? 0;
        }
      }
    } catch (err) {
      if (!ctrl.signal.aborted) throw ConnectError.from(err);
    }
    return { started, ended: performance.now(), t0, queueMs, decodeMs, tokens };
  };

  try {
    const full = await call(120);
    const fullMs = full.ended - full.t0;
    const stepMs = full.decodeMs / Math.max(1, full.tokens - 1);
    const waited: number[] = [];
    const cancelToStart: number[] = [];
    const memory: [number, number, number][] = [];
    for (let round = 0; round < WARM_UP + args.rounds; round++) {
      if (round >= WARM_UP && (round - WARM_UP) % 15 === 0) memory.push([round - WARM_UP, rssMb(pid), await heapMb()]);
      const cancelled = await call(120, 2);
      const next = await call(4);
      if (round >= WARM_UP) {
        waited.push(next.queueMs);
        cancelToStart.push(next.started - cancelled.ended);
      }
    }
    memory.push([args.rounds, rssMb(pid), await heapMb()]);
    const f = (x: number) => x.toFixed(2);
    console.log(`\none decoding step ${f(stepMs)} ms (engine); a whole 120-token request ${f(fullMs)} ms\n`);
    console.log("| after a cancel, the next request | p50 | p90 | max |");
    console.log("|---|---|---|---|");
    console.log(
      `| waited for the worker (queue_ms) | ${f(pct(waited, 50))} | ${f(pct(waited, 90))} | ${f(Math.max(...waited))} |`,
    );
    console.log(
      `| from the cancel to its Started | ${f(pct(cancelToStart, 50))} | ${f(pct(cancelToStart, 90))} | ${f(Math.max(...cancelToStart))} |`,
    );
    console.log(`\n| cancels so far | service RSS (MB) | main-thread heap (MB) |\n|---|---|---|`);
    for (const [n, rss, heap] of memory) console.log(`| ${n} | ${rss.toFixed(1)} | ${heap.toFixed(1)} |`);
  } finally {
    service.child.kill("SIGTERM");
    rmSync(scratch, { recursive: true, force: true });
  }
}
