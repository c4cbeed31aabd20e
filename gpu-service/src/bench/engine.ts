/**
 * `npm run bench -- engine`: decoder cost on a bench-size model with random
 * weights (generated in memory), batch 1, at a given context: prefill time,
 * decode step time against the memory-bandwidth floor (bytes of weights and
 * KV read per step / bandwidth measured in the same run), and the cost of
 * verifying 2, 4 and 6 tokens in one pass relative to one.
 */
import { Rng } from "../engine/decoding/sampling.js";
import { DecoderSegment } from "../engine/runtime/decoder-segment.js";
import { randomDecoderLayers, tinyTextConfig } from "../engine/tiny-model.js";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Memory bandwidth (bytes/s): a native copy of a buffer far larger than the caches, counting bytes read + written. */
function measureBandwidth(): number {
  const src = new Float32Array(64 * 1024 * 1024).fill(1);
  const dst = new Float32Array(src.length);
  let best = 0;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    dst.set(src);
    const dt = (performance.now() - t0) / 1000;
    best = Math.max(best, (2 * src.byteLength) / dt);
  }
  return best;
}

export async function benchEngine(args: {
  hidden: number;
  layers: number;
  context: number;
  threads: number;
  reps: number;
}): Promise<void> {
  const cfg = tinyTextConfig({
    hiddenSize: args.hidden,
    intermediateSize: Math.round((args.hidden * 11) / 4),
    numLayers: args.layers,
    numHeads: args.hidden / 64,
    numKvHeads: args.hidden / 64,
    maxPositionEmbeddings: args.context + 64,
  });
  console.log(
    `bench engine: hidden ${cfg.hiddenSize}, ${cfg.numLayers} layers, FFN ${cfg.intermediateSize}, context ${args.context}, fp32, ${args.threads || "auto"} threads`,
  );
  const layers = randomDecoderLayers(new Rng(1), cfg);
  const segment = await DecoderSegment.create(cfg, layers, { threads: args.threads });
  const H = cfg.hiddenSize;
  const rng = new Rng(2);
  const hiddenFor = (n: number) => Float32Array.from({ length: n * H }, () => rng.next() - 0.5);

  const prefillTimes: number[] = [];
  let caches = segment.newCaches();
  for (let r = 0; r < Math.max(2, Math.floor(args.reps / 3)); r++) {
    caches = segment.newCaches();
    const t0 = performance.now();
    await segment.run(
      hiddenFor(args.context),
      Array.from({ length: args.context }, (_, i) => i),
      caches,
    );
    prefillTimes.push(performance.now() - t0);
  }
  const stepTime = async (n: number) => {
    const times: number[] = [];
    for (let r = 0; r < args.reps; r++) {
      const t0 = performance.now();
      await segment.run(
        hiddenFor(n),
        Array.from({ length: n }, (_, i) => args.context + i),
        caches,
      );
      times.push(performance.now() - t0);
      for (const c of caches) c.truncate(args.context);
    }
    return median(times);
  };
  await stepTime(1); // warm
  const one = await stepTime(1);
  const verify = [2, 4, 6].map((n) => n);
  const verifyTimes: number[] = [];
  for (const n of verify) verifyTimes.push(await stepTime(n));

  const weightBytes = layers.length * 4 * (4 * H * H + 3 * H * cfg.intermediateSize);
  const kvBytes = layers.length * 2 * args.context * cfg.numKvHeads * (H / cfg.numHeads) * 4;
  const bandwidth = measureBandwidth();
  const floorMs = ((weightBytes + kvBytes) / bandwidth) * 1000;
  const rows = [
    ["prefill (ms)", median(prefillTimes).toFixed(1)],
    ["decode step (ms)", one.toFixed(2)],
    ["bytes read per step (MB)", ((weightBytes + kvBytes) / 1e6).toFixed(1)],
    ["copy bandwidth (GB/s, measured)", (bandwidth / 1e9).toFixed(2)],
    ["bandwidth floor (ms)", floorMs.toFixed(2)],
    ["decode / floor", (one / floorMs).toFixed(2)],
    ...verify.map((n, i) => [`verify ${n} tokens / 1 token`, (verifyTimes[i] / one).toFixed(2)]),
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`);
  console.log("  int4 (MatMulNBits): not built yet");
  await segment.release();
}
