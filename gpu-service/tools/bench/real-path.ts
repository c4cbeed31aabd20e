/**
 * `npm run bench -- engine --model DIR` (or `--real` on a generated size): the path users run,
 * timed beside the isolated decoder segment and the memory-bandwidth floor.
 *
 * The real path is `LocalEngine.generate`, the code behind the CLI's `generate` and every engine
 * worker of the service: image preprocessing, the vision tower, the twig decoder's segments
 * (lower, twig, mid, top), the heads, sampling, the text stream and its events. It is timed in
 * `base`, `ttp-only` and `twig` on a prompt padded with text to each context, greedy, for a fixed
 * number of tokens (sized models have a zero EOS row, so they never stop early). A decode step is
 * the median gap between two arrivals of tokens at the event callback (one token per step in
 * `base` and `ttp-only`; in `twig` an arrival is one verification's tokens, so it is also reported
 * per token). The isolated segment is all L layers as one
 * `DecoderSegment` (what `bench -- engine` times without `--model`), prefilled with the same
 * number of rows and stepped one token at a time over the same contexts, between the real runs
 * so that load on the machine falls on both alike.
 *
 * Where a real step's time goes comes from tensor-io.ts's probe, over the decode steps only:
 * each session's run (ONNX Runtime, including moving tensors in and out), making the feeds
 * (tensor objects, masks, positions), writing new keys and values into the KV slots, embedding,
 * the text stream with the event callback, and the rest (sampling, verification, the loop).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { Rng } from "../../src/engine/decoding/sampling.js";
import { LocalEngine } from "../../src/engine/local-engine.js";
import type { ExecutionProvider, Precision } from "../../src/engine/options.js";
import type { Mode } from "../../src/engine/plan.js";
import { DecoderSegment } from "../../src/engine/runtime/decoder-segment.js";
import { probe } from "../../src/engine/runtime/tensor-io.js";
import { TextCodec } from "../../src/engine/tokenizer.js";
import type { TextConfig } from "../../src/engine/weights.js";
import { writeSizedModel } from "../make-tiny/sized-model.js";
import { measureBandwidth, median, printTable, weightBytes } from "./engine.js";

export interface RealPathBenchArgs {
  /** A model directory, or undefined to generate one of `hidden` x `layers` in a temporary directory. */
  model?: string;
  hidden: number;
  layers: number;
  contexts: number[];
  precisions: Precision[];
  modes: Mode[];
  tokens: number;
  threads: number;
  reps: number;
  provider: ExecutionProvider;
}

interface RunStats {
  prefillMs: number;
  /** Median gap between token events after the first (ms). */
  stepMs: number;
  /** Decode time per generated token after the first event (ms). */
  perTokenMs: number;
  /** Process CPU time (all threads) per generated token after the first event (ms): less disturbed by other load. */
  cpuPerTokenMs: number;
  tokens: number;
  acceptance: number;
  /** Probe spans over the decode steps, ms per generated token. */
  spans: Map<string, number>;
  /** KV buffers allocated during the decode steps. */
  kvAllocations: number;
  /** Probe spans until the first token (prefill), ms. */
  prefillSpans: Map<string, number>;
  /** Process CPU time (all threads) until the first token, ms. */
  prefillCpuMs: number;
}

function cpuMsSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

/** One generate call through the engine, timed from its events. */
async function timeGenerate(
  engine: LocalEngine,
  image: Uint8Array,
  content: string,
  mode: Mode,
  tokens: number,
): Promise<RunStats> {
  const params = await engine.plan({
    image,
    messages: [{ role: "user", content }],
    maxTokens: tokens,
    temperature: 0,
    topP: 1,
    stop: [],
    mode,
  });
  const arrivals: { at: number; n: number }[] = [];
  let prefillMs = 0;
  let acceptance = 0;
  let decodeStart = 0;
  let cpuStart = process.cpuUsage();
  let cpuMs = 0;
  let prefillCpuMs = 0;
  let spans = new Map<string, number>();
  let prefillSpans = new Map<string, number>();
  let kvAllocations = 0;
  let sameTurn = false;
  probe.reset();
  probe.timing = true;
  cpuStart = process.cpuUsage();
  try {
    await engine.generate(params, (e) => {
      if (e.type === "delta" && e.tokenIds.length > 0) {
        // one verification can send two deltas (accepted drafts, then the model's own token) in
        // the same turn of the event loop: they are one arrival
        if (sameTurn) {
          arrivals[arrivals.length - 1].n += e.tokenIds.length;
          return;
        }
        sameTurn = true;
        queueMicrotask(() => {
          sameTurn = false;
        });
        arrivals.push({ at: performance.now(), n: e.tokenIds.length });
        if (arrivals.length === 1) {
          decodeStart = performance.now();
          prefillCpuMs = cpuMsSince(cpuStart);
          cpuStart = process.cpuUsage();
          prefillSpans = new Map([...probe.spans].map(([k, v]) => [k, v.ms]));
          probe.reset(); // from here on: decode steps only
        }
      }
      if (e.type === "finished") {
        const cpu = process.cpuUsage(cpuStart);
        cpuMs = (cpu.user + cpu.system) / 1000;
        prefillMs = e.stats.prefillMs;
        acceptance = e.stats.acceptanceRate;
        spans = new Map([...probe.spans].map(([k, v]) => [k, v.ms]));
        kvAllocations = probe.kvAllocations;
      }
    });
  } finally {
    probe.timing = false;
  }
  const generated = arrivals.reduce((a, x) => a + x.n, 0);
  const after = generated - arrivals[0].n;
  const gaps = arrivals.slice(1).map((x, i) => x.at - arrivals[i].at);
  const decodeMs = arrivals[arrivals.length - 1].at - decodeStart;
  return {
    prefillMs,
    stepMs: median(gaps),
    perTokenMs: decodeMs / Math.max(1, after),
    cpuPerTokenMs: cpuMs / Math.max(1, after),
    tokens: generated,
    acceptance,
    spans: new Map([...spans].map(([k, ms]) => [k, ms / Math.max(1, after)])),
    kvAllocations,
    prefillSpans,
    prefillCpuMs,
  };
}

interface SegmentStats {
  prefillMs: number;
  stepMs: number;
  cpuStepMs: number;
  /** Probe spans of the prefill, ms. */
  prefillSpans: Map<string, number>;
  /** Process CPU time (all threads) of the prefill, ms. */
  prefillCpuMs: number;
}

/** The isolated segment: prefill `context` random rows, then `tokens` single-token steps (median ms each). */
async function timeSegment(
  segment: DecoderSegment,
  cfg: TextConfig,
  context: number,
  tokens: number,
  rng: Rng,
): Promise<SegmentStats> {
  const H = cfg.hiddenSize;
  const rows = (n: number) => Float32Array.from({ length: n * H }, () => rng.next() - 0.5);
  const caches = segment.newCaches(context + tokens);
  const positions = Array.from({ length: context }, (_, i) => i);
  const prompt = rows(context);
  probe.reset();
  probe.timing = true;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  try {
    await segment.run(prompt, positions, caches);
  } finally {
    probe.timing = false;
  }
  const prefillMs = performance.now() - t0;
  const prefillCpuMs = cpuMsSince(cpu0);
  const prefillSpans = new Map([...probe.spans].map(([k, v]) => [k, v.ms]));
  const steps: number[] = [];
  const inputs = Array.from({ length: tokens - 1 }, () => rows(1));
  const cpu = process.cpuUsage();
  for (let i = 0; i < tokens - 1; i++) {
    const t = performance.now();
    await segment.run(inputs[i], [context + i], caches);
    steps.push(performance.now() - t);
  }
  const used = process.cpuUsage(cpu);
  return {
    prefillMs,
    stepMs: median(steps),
    cpuStepMs: (used.user + used.system) / 1000 / (tokens - 1),
    prefillSpans,
    prefillCpuMs,
  };
}

/** Where the prefill goes: each session's runs (ONNX Runtime), then the work around them. */
const PREFILL_ROWS: [string, (k: string) => boolean][] = [
  ["vision tower and projector", (k) => k === "run:vision"],
  ["segment: lower (layers 1..K)", (k) => k === "run:lower"],
  ["segment: twig", (k) => k === "run:twig"],
  ["segment: mid (K+1..K_f)", (k) => k === "run:mid"],
  ["segment: top (K_f+1..L)", (k) => k === "run:top"],
  ["segment: all L layers", (k) => k === "run:isolated" || k === "run:full"],
  ["heads", (k) => k === "run:head" || k === "run:twig-head"],
  ["feeds (tensor objects, masks, positions)", (k) => k === "feeds"],
  ["KV: new keys and values into the slots", (k) => k === "kv-write"],
  ["embedding", (k) => k === "embed"],
];

const SPAN_ROWS: [string, (k: string) => boolean][] = [
  ["ONNX Runtime: decoder segments", (k) => /^run:(lower|mid|top|twig|full)$/.test(k)],
  ["ONNX Runtime: heads (LM head, twig head)", (k) => k === "run:head" || k === "run:twig-head"],
  ["feeds (tensor objects, masks, positions)", (k) => k === "feeds"],
  ["KV: new keys and values into the slots", (k) => k === "kv-write"],
  ["embedding", (k) => k === "embed"],
  ["text stream and events", (k) => k === "text-stream"],
];

export async function benchRealPath(args: RealPathBenchArgs): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), "twig-bench-real-"));
  try {
    let modelDir = args.model;
    if (!modelDir) {
      modelDir = join(scratch, "model");
      const t0 = performance.now();
      const { parameters } = writeSizedModel(modelDir, {
        text: {
          hiddenSize: args.hidden,
          numLayers: args.layers,
          numHeads: Math.max(1, args.hidden / 64),
          numKvHeads: Math.max(1, args.hidden / 64),
          intermediateSize: Math.round((args.hidden * 11) / 4),
          maxPositionEmbeddings: Math.max(...args.contexts) + args.tokens + 64,
        },
        twig: { k: 2, t: 3 },
        tokenizerDir: join(import.meta.dirname, "../../../models/demo"),
      });
      console.log(
        `  generated a random model of ${(parameters / 1e6).toFixed(0)}M parameters in ${((performance.now() - t0) / 1000).toFixed(1)} s (make-tiny --hidden ${args.hidden} --layers ${args.layers})`,
      );
    }
    const codec = TextCodec.load(modelDir);
    const bw = await measureBandwidth(args.threads);
    const bandwidth = Math.max(bw.copy, bw.read);
    console.log(
      `bench engine (real path, ${args.provider}): ${modelDir}, contexts ${args.contexts.join(", ")}, ${args.tokens} tokens, ${args.threads} threads, modes ${args.modes.join(", ")}; bandwidth ${(bandwidth / 1e9).toFixed(2)} GB/s`,
    );
    for (const precision of args.precisions) {
      const t0 = performance.now();
      const options = {
        precision,
        threads: args.threads,
        provider: args.provider,
        graphCacheDir: join(scratch, "graphs"),
      };
      const engine = await LocalEngine.load(modelDir, options);
      const weights = engine.weights;
      const cfg = weights.config.text;
      const segment = await DecoderSegment.create(cfg, weights.text.layers, { ...options, name: "isolated" });
      console.log(
        `\n${precision}: engine and isolated segment (${segment.attention} attention) loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      const side = weights.config.vision.imageSize;
      const image = await sharp({
        create: { width: side, height: side, channels: 3, background: { r: 40, g: 120, b: 200 } },
      })
        .png()
        .toBuffer();
      const visual = engine.info.visualTokens;
      const promptTokens = (content: string) =>
        codec.encode(codec.formatChat([{ role: "user", content }])).length - 1 + visual;
      const rng = new Rng(7);
      for (const context of args.contexts) {
        const base = promptTokens("describe the picture");
        if (context < base) throw new RangeError(`context ${context} is below the shortest prompt (${base} tokens)`);
        const content = `describe the picture${" the".repeat(context - base)}`;
        const actual = promptTokens(content);
        const real = new Map<Mode, RunStats[]>(args.modes.map((m) => [m, []]));
        const seg: SegmentStats[] = [];
        await timeGenerate(engine, image, content, "base", 4); // warm every session at this length
        for (let r = 0; r < args.reps; r++) {
          seg.push(await timeSegment(segment, cfg, actual, args.tokens, rng));
          for (const m of args.modes) real.get(m)?.push(await timeGenerate(engine, image, content, m, args.tokens));
        }
        printContext(args, precision, cfg, actual, bandwidth, real, seg);
      }
      await segment.release();
      await engine.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function printContext(
  args: RealPathBenchArgs,
  precision: Precision,
  cfg: TextConfig,
  context: number,
  bandwidth: number,
  real: Map<Mode, RunStats[]>,
  seg: SegmentStats[],
): void {
  const modes = [...real.keys()];
  const med = (m: Mode, f: (s: RunStats) => number) => median((real.get(m) ?? []).map(f));
  const segStep = median(seg.map((s) => s.stepMs));
  const segPrefill = median(seg.map((s) => s.prefillMs));
  const hd = cfg.hiddenSize / cfg.numHeads;
  // KV read by a step at the mean context of the decode (all L layers, unpruned: base's and the segment's)
  const kvBytes = cfg.numLayers * 2 * (context + args.tokens / 2) * cfg.numKvHeads * hd * 4;
  const floor = ((weightBytes(cfg, precision) + kvBytes) / bandwidth) * 1000;
  const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");
  console.log(
    `\n  ${precision}, context ${context} (prompt ${context} tokens, ${args.tokens} generated, ${args.reps} runs each, medians); floor ${fmt(floor)} ms = ${((weightBytes(cfg, precision) + kvBytes) / 1e6).toFixed(0)} MB of weights and KV at ${(bandwidth / 1e9).toFixed(1)} GB/s`,
  );
  const spanOf = (m: Mode, match: (k: string) => boolean) =>
    med(m, (s) => [...s.spans].filter(([k]) => match(k)).reduce((a, [, ms]) => a + ms, 0));
  const known = (k: string) => SPAN_ROWS.some(([, f]) => f(k));
  printTable(
    ["", ...modes, "isolated segment"],
    [
      [
        "prefill (ms)",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.prefillMs),
            0,
          ),
        ),
        fmt(segPrefill, 0),
      ],
      [
        "prefill (tokens/s)",
        ...modes.map((m) => fmt((context / med(m, (s) => s.prefillMs)) * 1000, 0)),
        fmt((context / segPrefill) * 1000, 0),
      ],
      [
        "prefill CPU time, all threads (ms)",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.prefillCpuMs),
            0,
          ),
        ),
        fmt(median(seg.map((s) => s.prefillCpuMs)), 0),
      ],
      [
        "prefill CPU time / isolated segment's",
        ...modes.map((m) => fmt(med(m, (s) => s.prefillCpuMs) / median(seg.map((s) => s.prefillCpuMs)), 2)),
        "1.00",
      ],
      ["decode step (ms, median gap)", ...modes.map((m) => fmt(med(m, (s) => s.stepMs))), fmt(segStep)],
      ["decode per token (ms)", ...modes.map((m) => fmt(med(m, (s) => s.perTokenMs))), fmt(segStep)],
      ["decode step / isolated segment", ...modes.map((m) => fmt(med(m, (s) => s.stepMs) / segStep, 2)), "1.00"],
      [
        "decode CPU time per token, all threads (ms)",
        ...modes.map((m) => fmt(med(m, (s) => s.cpuPerTokenMs))),
        fmt(median(seg.map((s) => s.cpuStepMs))),
      ],
      [
        "decode CPU time / isolated segment's",
        ...modes.map((m) => fmt(med(m, (s) => s.cpuPerTokenMs) / median(seg.map((s) => s.cpuStepMs)), 2)),
        "1.00",
      ],
      ["decode step / floor", ...modes.map((m) => fmt(med(m, (s) => s.stepMs) / floor, 2)), fmt(segStep / floor, 2)],
      [
        "tokens generated",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.tokens),
            0,
          ),
        ),
        fmt(args.tokens, 0),
      ],
      [
        "draft acceptance",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.acceptance),
            2,
          ),
        ),
        "-",
      ],
      [
        "KV buffers allocated while decoding",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.kvAllocations),
            0,
          ),
        ),
        "-",
      ],
    ],
  );
  console.log(
    "  where the prefill goes (ms, from the engine's probe; the rest: sampling, scoring, rows between segments)",
  );
  const prefillSpan = (spans: Map<string, number>, match: (k: string) => boolean) =>
    [...spans].filter(([k]) => match(k)).reduce((a, [, ms]) => a + ms, 0);
  const anyPrefill = (k: string) => PREFILL_ROWS.some(([, f]) => f(k));
  printTable(
    ["", ...modes, "isolated segment"],
    [
      ...PREFILL_ROWS.map(([label, f]) => [
        label,
        ...modes.map((m) =>
          fmt(
            med(m, (s) => prefillSpan(s.prefillSpans, f)),
            0,
          ),
        ),
        fmt(median(seg.map((s) => prefillSpan(s.prefillSpans, f))), 0),
      ]),
      [
        "the rest",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.prefillMs - prefillSpan(s.prefillSpans, anyPrefill)),
            0,
          ),
        ),
        fmt(median(seg.map((s) => s.prefillMs - prefillSpan(s.prefillSpans, anyPrefill))), 0),
      ],
    ],
  );
  console.log("  where a decode step goes (ms per generated token, from the engine's probe)");
  printTable(
    ["", ...modes],
    [
      ...SPAN_ROWS.map(([label, f]) => [label, ...modes.map((m) => fmt(spanOf(m, f), 2))]),
      [
        "the rest (sampling, verification, rows, the loop)",
        ...modes.map((m) =>
          fmt(
            med(m, (s) => s.perTokenMs - [...s.spans].filter(([k]) => known(k)).reduce((a, [, ms]) => a + ms, 0)),
            2,
          ),
        ),
      ],
    ],
  );
}
