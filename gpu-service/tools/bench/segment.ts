/**
 * `npm run bench -- segment`: one batched decoder segment's run (runtime/batched-segment.ts: the feeds,
 * ONNX Runtime's run, the KV append), the way a round runs it, at several batch sizes B and rows a
 * sequence S (`--configs 1x1,1x3,8x1,8x2,8x3,16x2`). Default: the demo model's mid segment (base
 * layers K .. K_f - 1 of its twig's split, as the batch loop builds it), every slot holding `--past`
 * positions (80), `--reps` runs per configuration (400) on `--threads` intra-op threads (1). Each
 * run's new rows are taken back afterwards, so every run sees the same cache.
 *
 * With `--against DIR` (another checkout of this repository, its node_modules linked), the same runs
 * go through that checkout's BatchedSegment too, in one process, run by run in alternation: the table
 * gives both medians, this checkout's time over the other's run by run (quartiles), and how many
 * output values differ bitwise (hidden states and the slots' keys after one run). Alternating run by
 * run takes the machine's drift out of the comparison, which separate runs of a benchmark on a shared
 * machine cannot (their figures move by 10-30% here).
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { loadLlava, loadTwig } from "../../src/engine/checkpoint/llava-loader.js";
import { Rng } from "../../src/engine/decoding/sampling.js";
import type { BatchKv } from "../../src/engine/runtime/batched-kv.js";
import { BatchedSegment } from "../../src/engine/runtime/batched-segment.js";
import type { LlavaWeights } from "../../src/engine/weights.js";
import { benchModelDir } from "./batch-workload.js";
import { percentile } from "./timed-generate.js";

export interface SegmentBenchArgs {
  model?: string;
  against?: string;
  configs: { batch: number; rows: number }[];
  past: number;
  reps: number;
  threads: number;
}

/**
 * The layers the bench runs: the batch loop's mid segment when the model has a twig (base layers K ..
 * K_f - 1, as BatchLoop.create splits them), else its one segment of every layer.
 */
function midLayers(modelDir: string, weights: LlavaWeights): [number, number] {
  const dir = join(modelDir, "twig");
  if (!existsSync(join(dir, "config.json"))) return [0, weights.text.layers.length];
  const twig = loadTwig(dir, weights);
  return [twig.k, twig.finalWipeLayer];
}

type Segment = Pick<BatchedSegment, "run" | "newCache">;

export async function benchSegment(args: SegmentBenchArgs): Promise<void> {
  const modelDir = benchModelDir(args.model);
  const weights = loadLlava(modelDir);
  const config = weights.config.text;
  const [from, to] = midLayers(modelDir, weights);
  const layers = weights.text.layers.slice(from, to);
  const kinds: { label: string; create: typeof BatchedSegment.create }[] = [
    { label: "this", create: BatchedSegment.create.bind(BatchedSegment) },
  ];
  if (args.against) {
    const file = resolve(args.against, "gpu-service/src/engine/runtime/batched-segment.ts");
    const other = (await import(pathToFileURL(file).href)) as { BatchedSegment: typeof BatchedSegment };
    kinds.push({ label: "against", create: other.BatchedSegment.create.bind(other.BatchedSegment) });
  }
  const segments: Segment[] = [];
  for (const k of kinds) segments.push(await k.create(config, layers, { threads: args.threads }));

  console.log(
    `bench segment: ${modelDir.split("/").pop()}, base layers ${from}-${to - 1} as one batched segment, ${args.past} past positions a slot, ${args.reps} runs per configuration, ${args.threads} thread(s)${args.against ? `, against ${args.against} run by run` : ""}`,
  );
  console.log(
    `   B x S   ms/run p50${args.against ? "   against ms/run p50   this / against p25 / p50 / p75   values differing" : ""}`,
  );
  const H = config.hiddenSize;
  const rng = new Rng(1);
  const random = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
  for (const { batch: B, rows: S } of args.configs) {
    const prompt = Array.from({ length: B }, () => ({
      hidden: random(args.past * H),
      positions: Array.from({ length: args.past }, (_, i) => i),
    }));
    const rows = Array.from({ length: B }, () => ({
      hidden: random(S * H),
      positions: Array.from({ length: S }, (_, i) => args.past + i),
    }));
    const caches: BatchKv[] = [];
    for (const seg of segments) {
      const cache = seg.newCache({ slots: B });
      for (let b = 0; b < B; b++) cache.add(args.past + S);
      await seg.run(cache, prompt);
      caches.push(cache);
    }
    const once = async (i: number): Promise<Float32Array[]> => {
      const out = await segments[i].run(caches[i], rows);
      const keys = caches[i].keys(0, layers.length - 1);
      for (let b = 0; b < B; b++) caches[i].truncate(b, args.past);
      return [...out, keys];
    };
    let differing = 0;
    if (segments.length > 1) {
      const [a, b] = [await once(0), await once(1)];
      a.forEach((x, i) => {
        x.forEach((v, j) => {
          if (!Object.is(v, b[i][j])) differing++;
        });
      });
    }
    const times: number[][] = segments.map(() => []);
    for (let r = 0; r < args.reps; r++)
      for (let k = 0; k < segments.length; k++) {
        const i = (r + k) % segments.length; // who goes first alternates
        const t0 = performance.now();
        await segments[i].run(caches[i], rows);
        times[i].push(performance.now() - t0);
        for (let b = 0; b < B; b++) caches[i].truncate(b, args.past);
      }
    const p50 = (xs: number[]) => percentile(xs, 50).toFixed(3);
    let line = `  ${`${B} x ${S}`.padStart(6)}   ${p50(times[0]).padStart(10)}`;
    if (segments.length > 1) {
      const ratios = times[0].map((t, i) => t / times[1][i]);
      const q = [25, 50, 75].map((p) => percentile(ratios, p).toFixed(3)).join(" / ");
      line += `   ${p50(times[1]).padStart(17)}   ${q.padStart(30)}   ${String(differing).padStart(16)}`;
    }
    console.log(line);
  }
}
