/**
 * `npm run bench -- engine`: decoder cost on a bench-size model with random weights
 * (generated in memory, never written but for the external-data cache of large graphs,
 * in a temporary directory removed at the end), batch 1, at a given context, for each
 * weight precision and attention implementation side by side: prefill time, decode step time against the
 * memory-bandwidth floor (bytes of weights and KV read per step / bandwidth measured in
 * the same run), and the cost of verifying 2, 4 and 6 tokens in one pass relative to one.
 * Then where a decode step's time goes: ONNX Runtime's own per-node profile, grouped by
 * operator, plus the time outside ONNX Runtime (tensors in and out of Node).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Rng } from "../../src/engine/decoding/sampling.js";
import { GraphBuilder } from "../../src/engine/onnx/graph.js";
import { INT4_BLOCK } from "../../src/engine/onnx/quantize.js";
import type { AttentionImpl, Precision } from "../../src/engine/options.js";
import { DecoderSegment } from "../../src/engine/runtime/decoder-segment.js";
import { createSession, ort } from "../../src/engine/runtime/session.js";
import type { TextConfig } from "../../src/engine/weights.js";
import { llamaShape } from "../make-tiny/sized-model.js";
import { randomDecoderLayers, tinyTextConfig } from "../make-tiny/tiny-model.js";

export interface EngineBenchArgs {
  hidden: number;
  layers: number;
  context: number;
  threads: number;
  reps: number;
  precisions: Precision[];
  attentions: AttentionImpl[];
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Memory bandwidth (bytes/s), two ways: a JS copy (one thread; read + write counted) and
 * ONNX Runtime summing a buffer (its threads; reads). Each by wall time, and the copy also
 * by the process's CPU time, which a machine shared with other work disturbs far less.
 */
export async function measureBandwidth(threads: number): Promise<{ copy: number; read: number; copyCpu: number }> {
  const n = 64 * 1024 * 1024;
  const src = new Float32Array(n).fill(1);
  const dst = new Float32Array(n);
  let copy = 0;
  let copyCpu = 0;
  for (let r = 0; r < 5; r++) {
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    dst.set(src);
    copy = Math.max(copy, (2 * src.byteLength) / ((performance.now() - t0) / 1000));
    const used = process.cpuUsage(cpu);
    copyCpu = Math.max(copyCpu, (2 * src.byteLength) / ((used.user + used.system) / 1e6));
  }
  const g = new GraphBuilder("bandwidth");
  const axes = g.input("axes", "int64", [1]); // an input, so the sum cannot be folded away at load
  const data = g.weight("data", [n], src);
  g.output(g.op("ReduceSum", [data, axes], { keepdims: 0 })[0], "sum", "float32", []);
  const session = await createSession(g.toBytes(), { threads });
  let read = 0;
  for (let r = 0; r < 7; r++) {
    const t0 = performance.now();
    await session.run({ axes: new ort.Tensor("int64", BigInt64Array.of(0n), [1]) });
    read = Math.max(read, src.byteLength / ((performance.now() - t0) / 1000));
  }
  await session.release();
  return { copy, read, copyCpu };
}

/** Bytes of weights a decode step reads: every linear once, at the precision's size. */
export function weightBytes(cfg: TextConfig, precision: Precision, block = INT4_BLOCK): number {
  const H = cfg.hiddenSize;
  const kvWidth = cfg.numKvHeads * (H / cfg.numHeads);
  const matrices: [number, number][] = [
    [H, H],
    [kvWidth, H],
    [kvWidth, H],
    [H, H],
    [cfg.intermediateSize, H],
    [cfg.intermediateSize, H],
    [H, cfg.intermediateSize],
  ];
  const perLayer = matrices.reduce((a, [n, k]) => {
    if (precision === "fp32") return a + n * k * 4;
    if (precision === "fp16") return a + n * k * 2;
    const blocks = n * Math.ceil(k / block);
    return a + blocks * (block / 2 + 4);
  }, 0);
  return cfg.numLayers * (perLayer + 2 * H * 4);
}

interface PrecisionResult {
  precision: Precision;
  attention: AttentionImpl;
  /** Column label: precision and attention. */
  label: string;
  prefillMs: number;
  decodeMs: number;
  /** CPU time of the process per decode step (all threads): less sensitive than wall time to other load on the machine. */
  decodeCpuMs: number;
  verifyMs: number[];
  weightBytes: number;
  /** Mean ms per decode step by operator type, from ONNX Runtime's profile. */
  ops: Map<string, number>;
  /** Mean ms per decode step inside ONNX Runtime (its model_run), and as timed from Node, over the profiled steps. */
  ortMs: number;
  runMs: number;
}

const VERIFY = [2, 4, 6];

async function benchPrecision(
  args: EngineBenchArgs,
  cfg: TextConfig,
  layers: ReturnType<typeof randomDecoderLayers>,
  precision: Precision,
  attention: AttentionImpl,
  scratch: string,
): Promise<PrecisionResult> {
  const t0 = performance.now();
  const profileDir = mkdtempSync(join(scratch, `profile-${precision}-`));
  const segment = await DecoderSegment.create(cfg, layers, {
    threads: args.threads,
    precision,
    attention,
    graphCacheDir: join(scratch, "graphs"),
    profileFilePrefix: join(profileDir, "ort"),
  });
  console.log(`  ${precision} ${attention}: built and loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const H = cfg.hiddenSize;
  const rng = new Rng(2);
  const hiddenFor = (n: number) => Float32Array.from({ length: n * H }, () => rng.next() - 0.5);
  const positions = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

  const prefillTimes: number[] = [];
  let caches = segment.newCaches();
  for (let r = 0; r < Math.max(1, Math.floor(args.reps / 5)); r++) {
    caches = segment.newCaches();
    const h = hiddenFor(args.context);
    const t = performance.now();
    await segment.run(h, positions(0, args.context), caches);
    prefillTimes.push(performance.now() - t);
  }
  const cpuTimes: number[] = [];
  const stepTimes = async (n: number, reps = args.reps) => {
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const h = hiddenFor(n);
      const cpu = process.cpuUsage();
      const t = performance.now();
      await segment.run(h, positions(args.context, n), caches);
      times.push(performance.now() - t);
      const used = process.cpuUsage(cpu);
      if (n === 1) cpuTimes.push((used.user + used.system) / 1000);
      for (const c of caches) c.truncate(args.context);
    }
    return times;
  };
  const stepTime = async (n: number) => median(await stepTimes(n));
  await stepTimes(1, 2); // warm
  cpuTimes.length = 0;
  const decodeMs = await stepTime(1);
  const verifyMs: number[] = [];
  for (const n of VERIFY) verifyMs.push(await stepTime(n));
  // the last `args.reps` runs are single-token steps: their profile says where the time goes
  const last = await stepTimes(1);
  segment.endProfiling();
  await segment.release();
  const { ops, ortMs } = profileOfLastRuns(profileDir, args.reps);
  return {
    precision,
    attention,
    label: `${precision} ${attention}`,
    prefillMs: median(prefillTimes),
    decodeMs,
    decodeCpuMs: median(cpuTimes),
    verifyMs,
    weightBytes: weightBytes(cfg, precision),
    ops,
    ortMs,
    runMs: last.reduce((a, b) => a + b, 0) / last.length,
  };
}

interface ProfileEvent {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string };
}

/** Per-operator mean time (ms) over the last `runs` model runs of a profile, and the mean run time. */
function profileOfLastRuns(dir: string, runs: number): { ops: Map<string, number>; ortMs: number } {
  const file = readdirSync(dir).find((f) => f.endsWith(".json"));
  const ops = new Map<string, number>();
  if (!file) return { ops, ortMs: Number.NaN };
  const events = JSON.parse(readFileSync(join(dir, file), "utf8")) as ProfileEvent[];
  const modelRuns = events.filter((e) => e.cat === "Session" && e.name === "model_run").sort((a, b) => a.ts - b.ts);
  const last = modelRuns.slice(-runs);
  const inRun = (e: ProfileEvent) => last.some((r) => e.ts >= r.ts && e.ts + e.dur <= r.ts + r.dur);
  for (const e of events) {
    if (e.cat !== "Node" || !e.name.endsWith("_kernel_time") || !inRun(e)) continue;
    const op = e.args?.op_name ?? "?";
    ops.set(op, (ops.get(op) ?? 0) + e.dur / 1000 / last.length);
  }
  return { ops, ortMs: last.reduce((a, r) => a + r.dur / 1000, 0) / last.length };
}

export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ")}`;
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}

export async function benchEngine(args: EngineBenchArgs): Promise<void> {
  const cfg = tinyTextConfig({
    ...llamaShape(args.hidden, args.layers),
    maxPositionEmbeddings: args.context + 64,
  });
  console.log(
    `bench engine: hidden ${cfg.hiddenSize}, ${cfg.numLayers} layers, FFN ${cfg.intermediateSize}, ${cfg.numHeads} heads, context ${args.context}, batch 1, ${args.attentions.join(" and ")} attention, ${args.threads || "auto"} threads, random weights`,
  );
  const t0 = performance.now();
  const layers = randomDecoderLayers(new Rng(1), cfg);
  console.log(`  random weights generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const scratch = mkdtempSync(join(tmpdir(), "twig-bench-engine-"));
  const results: PrecisionResult[] = [];
  try {
    for (const p of args.precisions)
      for (const a of args.attentions) results.push(await benchPrecision(args, cfg, layers, p, a, scratch));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const bw = await measureBandwidth(args.threads);
  const bandwidth = Math.max(bw.copy, bw.read);
  const cpuBandwidth = Math.max(bandwidth, bw.copyCpu);
  const kvBytes = cfg.numLayers * 2 * args.context * cfg.numKvHeads * (cfg.hiddenSize / cfg.numHeads) * 4;
  console.log(
    `\n  bandwidth measured: copy ${(bw.copy / 1e9).toFixed(2)} GB/s (one thread, read + write), ONNX Runtime sum ${(bw.read / 1e9).toFixed(2)} GB/s (reads); floor uses ${(bandwidth / 1e9).toFixed(2)} GB/s`,
  );
  console.log(
    `  by CPU time: copy ${(bw.copyCpu / 1e9).toFixed(2)} GB/s; the CPU-time floor uses ${(cpuBandwidth / 1e9).toFixed(2)} GB/s (a machine shared with other work slows wall time far more than CPU time)`,
  );
  const threads = args.threads || 2;
  const floor = (r: PrecisionResult) => ((r.weightBytes + kvBytes) / bandwidth) * 1000;
  const cpuFloor = (r: PrecisionResult) => ((r.weightBytes + kvBytes) / cpuBandwidth) * 1000;
  const cols = (f: (r: PrecisionResult) => string) => results.map(f);
  printTable(
    ["", ...results.map((r) => r.label)],
    [
      ["prefill (ms)", ...cols((r) => r.prefillMs.toFixed(0))],
      ["decode step (ms)", ...cols((r) => r.decodeMs.toFixed(1))],
      ["weights read per step (MB)", ...cols((r) => (r.weightBytes / 1e6).toFixed(0))],
      ["KV read per step (MB)", ...cols(() => (kvBytes / 1e6).toFixed(0))],
      ["bandwidth floor (ms)", ...cols((r) => floor(r).toFixed(1))],
      ["decode / floor", ...cols((r) => (r.decodeMs / floor(r)).toFixed(2))],
      [`decode CPU time / ${threads} threads (ms)`, ...cols((r) => (r.decodeCpuMs / threads).toFixed(1))],
      ["CPU-time floor (ms)", ...cols((r) => cpuFloor(r).toFixed(1))],
      [
        "decode CPU time / threads / CPU-time floor",
        ...cols((r) => (r.decodeCpuMs / threads / cpuFloor(r)).toFixed(2)),
      ],
      ...VERIFY.map((n, i) => [
        `verify ${n} tokens / 1 token`,
        ...cols((r) => (r.verifyMs[i] / r.decodeMs).toFixed(2)),
      ]),
    ],
  );
  console.log("\n  where a decode step goes (ms per step; ONNX Runtime's node profile, mean of the last runs)");
  const opNames = [...new Set(results.flatMap((r) => [...r.ops.keys()]))].sort(
    (a, b) => (results[0].ops.get(b) ?? 0) - (results[0].ops.get(a) ?? 0),
  );
  const fmt = (ms: number | undefined) => (ms === undefined ? "-" : ms.toFixed(2));
  printTable(
    ["", ...results.map((r) => r.label)],
    [
      ...opNames.map((op) => [op, ...cols((r) => fmt(r.ops.get(op)))]),
      ["all nodes", ...cols((r) => fmt([...r.ops.values()].reduce((a, b) => a + b, 0)))],
      ["ONNX Runtime run (model_run)", ...cols((r) => fmt(r.ortMs))],
      ["decode step timed from Node", ...cols((r) => fmt(r.runMs))],
      ["outside ONNX Runtime (Node in/out)", ...cols((r) => fmt(r.runMs - r.ortMs))],
    ],
  );
  // The weight matrices alone: how fast ONNX Runtime's own matrix kernels stream the weights on
  // this machine. If they alone take more than the target's share of the floor, no change to the
  // graph or to the KV path can meet the target; only faster kernels (or a faster machine) can.
  const streamed = (r: PrecisionResult) => r.weightBytes + (r.attention === "direct" ? kvBytes : 0);
  const matmulMs = (r: PrecisionResult) =>
    [...r.ops.entries()].filter(([op]) => /MatMul/.test(op)).reduce((a, [, ms]) => a + ms, 0);
  console.log(
    "\n  the matrix products alone (MatMul, FusedMatMul, MatMulNBits: the weights, and with direct attention its products over the cache)",
  );
  printTable(
    ["", ...results.map((r) => r.label)],
    [
      ["matrix kernels (ms per step)", ...cols((r) => fmt(matmulMs(r)))],
      ["weights (and KV) streamed by them (GB/s)", ...cols((r) => (streamed(r) / 1e6 / matmulMs(r)).toFixed(2))],
      [
        "... as a share of the measured bandwidth",
        ...cols((r) => ((streamed(r) * 1000) / matmulMs(r) / bandwidth).toFixed(2)),
      ],
      ["matrix kernels / floor", ...cols((r) => (matmulMs(r) / floor(r)).toFixed(2))],
      ["everything else / floor", ...cols((r) => ((r.decodeMs - matmulMs(r)) / floor(r)).toFixed(2))],
    ],
  );
}
