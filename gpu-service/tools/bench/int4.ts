/**
 * `npm run bench -- int4`: where int4 decoding and prefill lose time against the bytes of their
 * weights. One decoder segment of random layers (2048 wide, 4 layers by default: the shape of
 * the 828M model's layers) is built once per weight format, the int4 ones differing in one
 * choice at a time from the engine's default (MatMulNBits block 32, accuracy_level 4, q/k/v and
 * gate/up fused): block size 64 and 128, accuracy levels 0 (fp32 activations, as unset),
 * 3 (bf16) and 1 (fp32), projections unfused; fp32 beside them. Each is prefilled with
 * `--context` rows and stepped one token at a time; the formats take turns, step by step, so
 * that other load on the machine falls on all of them alike. Printed: prefill and decode step
 * (wall, median; CPU time of all threads, mean), the bytes of weights a step reads, and the
 * step against the bandwidth floor (those bytes plus the KV over the bandwidth measured in the
 * same run).
 */
import { Rng } from "../../src/engine/decoding/sampling.js";
import type { DecoderGraphOptions } from "../../src/engine/onnx/decoder.js";
import { DecoderSegment } from "../../src/engine/runtime/decoder-segment.js";
import { llamaShape } from "../make-tiny/sized-model.js";
import { randomDecoderLayers, tinyTextConfig } from "../make-tiny/tiny-model.js";
import { measureBandwidth, median, printTable, weightBytes } from "./engine.js";

export interface Int4BenchArgs {
  hidden: number;
  layers: number;
  context: number;
  threads: number;
  reps: number;
}

const VARIANTS: [string, DecoderGraphOptions][] = [
  ["fp32", { precision: "fp32" }],
  ["int4 (block 32, acc 4, fused)", { precision: "int4" }],
  ["block 64", { precision: "int4", int4BlockSize: 64 }],
  ["block 128", { precision: "int4", int4BlockSize: 128 }],
  ["acc 0 (fp32 activations)", { precision: "int4", int4AccuracyLevel: 0 }],
  ["acc 3 (bf16)", { precision: "int4", int4AccuracyLevel: 3 }],
  ["unfused q/k/v, gate/up", { precision: "int4", fuseProjections: false }],
];

export async function benchInt4(args: Int4BenchArgs): Promise<void> {
  const cfg = tinyTextConfig({
    ...llamaShape(args.hidden, args.layers),
    maxPositionEmbeddings: args.context + args.reps + 64,
  });
  console.log(
    `bench int4: ${args.layers} layers of hidden ${cfg.hiddenSize}, FFN ${cfg.intermediateSize}, context ${args.context}, ${args.threads} threads, ${args.reps} steps each (formats in turn)`,
  );
  const layers = randomDecoderLayers(new Rng(1), cfg);
  const segments: DecoderSegment[] = [];
  for (const [label, o] of VARIANTS) {
    const t0 = performance.now();
    segments.push(await DecoderSegment.create(cfg, layers, { ...o, threads: args.threads, name: label }));
    console.log(`  ${label}: built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const rng = new Rng(3);
  const rows = (n: number) => Float32Array.from({ length: n * cfg.hiddenSize }, () => rng.next() - 0.5);
  const positions = Array.from({ length: args.context }, (_, i) => i);
  const caches = segments.map((s) => s.newCaches(args.context + 8));
  const prompt = rows(args.context);
  const prefill: { wall: number; cpu: number }[] = [];
  for (let i = 0; i < segments.length; i++) {
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    await segments[i].run(prompt, positions, caches[i]);
    const used = process.cpuUsage(cpu);
    prefill[i] = { wall: performance.now() - t0, cpu: (used.user + used.system) / 1000 };
  }
  const wall: number[][] = segments.map(() => []);
  const cpu: number[][] = segments.map(() => []);
  for (let r = 0; r < args.reps; r++) {
    const h = rows(1);
    for (let i = 0; i < segments.length; i++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await segments[i].run(h, [args.context], caches[i]);
      wall[i].push(performance.now() - t0);
      const used = process.cpuUsage(c0);
      cpu[i].push((used.user + used.system) / 1000);
      for (const c of caches[i]) c.truncate(args.context);
    }
  }
  for (const s of segments) await s.release();
  const bw = await measureBandwidth(args.threads);
  const bandwidth = Math.max(bw.copy, bw.read);
  const kvBytes = cfg.numLayers * 2 * args.context * cfg.hiddenSize * 4;
  const bytes = VARIANTS.map(([, o]) => weightBytes(cfg, o.precision ?? "fp32", o.int4BlockSize));
  const floor = (i: number) => ((bytes[i] + kvBytes) / bandwidth) * 1000;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`\n  bandwidth ${(bandwidth / 1e9).toFixed(2)} GB/s; KV read per step ${(kvBytes / 1e6).toFixed(0)} MB`);
  printTable(
    [
      "",
      "prefill (ms)",
      "prefill CPU (ms)",
      "step (ms)",
      "step CPU (ms)",
      "weights (MB)",
      "floor (ms)",
      "step / floor",
    ],
    VARIANTS.map(([label], i) => [
      label,
      prefill[i].wall.toFixed(0),
      prefill[i].cpu.toFixed(0),
      median(wall[i]).toFixed(2),
      mean(cpu[i]).toFixed(2),
      (bytes[i] / 1e6).toFixed(0),
      floor(i).toFixed(2),
      (median(wall[i]) / floor(i)).toFixed(2),
    ]),
  );
}
