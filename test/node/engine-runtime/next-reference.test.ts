/**
 * LLaVA-NeXT and LLaVA-NeXT-Video checkpoints written by the project's generator (HF layout, random
 * weights) load and run, and the engine equals the float64 reference (engine/reference/next.ts and
 * pruned.ts) on every step of the visual path and after it:
 *   - the processor's views: AnyRes base view and tiles, or each frame resized and cropped;
 *   - the visual tokens (tower + projector per view, unpad + image_newline; or per frame, pooled, then
 *     projected), to 1e-4 relative;
 *   - the visual tokens every pruning mode keeps, against scores the reference computes (TTP from the
 *     twig's last layer, FastV from base layer K, VisionZip from each view's or frame's CLS attention);
 *   - the greedy output of every mode, against float64 greedy decoding of the same pruned model;
 * for a landscape, a portrait and a square picture, and for clips of 4 and 8 frames (as lists of frames
 * and as an MP4 decoded by ffmpeg).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadLlava } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { Rng } from "../../../gpu-service/src/engine/decoding/sampling.js";
import { topR, visualScores } from "../../../gpu-service/src/engine/decoding/ttp.js";
import type { EngineEvent } from "../../../gpu-service/src/engine/events.js";
import { LocalEngine, type RequestTrace } from "../../../gpu-service/src/engine/local-engine.js";
import type { Mode, RequestInput } from "../../../gpu-service/src/engine/plan.js";
import { decoderLayersRef, type Vec } from "../../../gpu-service/src/engine/reference/llama.js";
import { nextVisualRef, type Rgb, videoVisualRef } from "../../../gpu-service/src/engine/reference/next.js";
import { greedyRef, promptRowsRef } from "../../../gpu-service/src/engine/reference/pruned.js";
import { LlavaRuntime } from "../../../gpu-service/src/engine/runtime/llava-runtime.js";
import { MODE_PLANS } from "../../../gpu-service/src/engine/twig/modes.js";
import type { LlavaWeights, TwigWeights } from "../../../gpu-service/src/engine/weights.js";
import { type NextVariant, writeTinyNextModel } from "../../../gpu-service/tools/make-tiny/tiny-next.js";
import { maxRelError } from "../../support/tolerance.js";

const dir = mkdtempSync(join(tmpdir(), "twig-next-ref-"));
const MODES = Object.keys(MODE_PLANS) as Mode[];
const MAX_TOKENS = 10;

/** A photo-like picture: smooth colour fields, a few discs and bars, and grain. */
function photo(width: number, height: number, seed: number): Rgb {
  const rng = new Rng(seed);
  const discs = Array.from({ length: 4 }, () => ({
    x: rng.next() * width,
    y: rng.next() * height,
    r: 4 + rng.next() * Math.min(width, height) * 0.3,
    c: [rng.next() * 255, rng.next() * 255, rng.next() * 255],
  }));
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      let px = [(x / width) * 200 + 20, (y / height) * 180 + 30, 128 + 60 * Math.sin((x + y) / 9)];
      for (const d of discs) if ((x - d.x) ** 2 + (y - d.y) ** 2 < d.r ** 2) px = d.c;
      if ((x >> 3) % 5 === 0) px = px.map((v) => v * 0.6);
      for (let c = 0; c < 3; c++)
        data[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(px[c] + (rng.next() - 0.5) * 24)));
    }
  return { data, width, height };
}

const png = async (img: Rgb) =>
  new Uint8Array(
    await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } })
      .png()
      .toBuffer(),
  );

interface Model {
  dir: string;
  engine: LocalEngine;
  runtime: LlavaRuntime;
  weights: LlavaWeights;
  twig: TwigWeights;
}

async function model(variant: NextVariant, seed: number): Promise<Model> {
  const modelDir = join(dir, variant);
  writeTinyNextModel(modelDir, seed, variant);
  const weights = loadLlava(modelDir);
  const engine = await LocalEngine.load(modelDir, { threads: 1 });
  const runtime = await LlavaRuntime.create(weights, { threads: 1 });
  return { dir: modelDir, engine, runtime, weights, twig: engine.twigWeights as TwigWeights };
}

interface Run {
  started: Extract<EngineEvent, { type: "started" }>;
  finished: Extract<EngineEvent, { type: "finished" }>;
  trace: RequestTrace;
}

async function generate(m: Model, params: Partial<RequestInput>): Promise<Run> {
  const events: EngineEvent[] = [];
  await m.engine.generate(
    await m.engine.plan({ maxTokens: MAX_TOKENS, temperature: 0, topP: 1, stop: [], mode: "twig", seed: 1, ...params }),
    (e) => events.push(e),
  );
  const started = events[0];
  const finished = events[events.length - 1];
  if (started.type !== "started" || finished.type !== "finished") throw new Error("events out of order");
  return { started, finished, trace: m.engine.lastTrace as RequestTrace };
}

/** The reference's scores of the visual tokens for the prompt around `features`. */
function referenceScores(m: Model, trace: RequestTrace, features: Vec[], cls: Vec) {
  const cfg = m.weights.config.text;
  const rows = promptRowsRef(m.weights, trace.inputIds, trace.imagePosition, features);
  const positions = rows.map((_, i) => i);
  const empty = () => ({ keys: [], values: [] });
  const { k, t } = m.twig;
  const lower = decoderLayersRef(cfg, m.weights.text.layers.slice(0, k), rows, positions, m.twig.layers.map(empty));
  const tw = decoderLayersRef(cfg, m.twig.layers, lower.hidden, positions, m.twig.layers.map(empty));
  const S = rows.length;
  const attention = (probs: number[][][]) =>
    visualScores(
      new Float32Array(probs.flat(2)),
      { heads: cfg.numHeads, queries: S, keys: S },
      positions,
      trace.imagePosition,
      features.length,
      m.engine.info.twig?.defaultScoreSource ?? "last-token",
    );
  return { rows, twig: attention(tw.probs[t - 1]), fastv: attention(lower.probs[k - 1]), visionzip: cls };
}

/** Everything the suite checks of one picture or clip: views, features, kept tokens and greedy outputs of every mode. */
async function checkAgainstReference(
  m: Model,
  params: Partial<RequestInput>,
  ref: { views: Float32Array[]; features: Vec[]; clsAttention: Vec },
  keep: number,
): Promise<number> {
  let checked = 0;
  // R-bar keeping `keep` of the N visual tokens above K (N is the request's)
  const base = await generate(m, { ...params, mode: "base" });
  const N = base.started.visualTokens;
  expect(N).toBe(ref.features.length);
  const { k, finalWipeLayer: kf } = m.twig;
  const L = m.weights.config.text.numLayers;
  const retainBudget = (N * k + Math.round(keep * N) * (kf - k)) / L;
  const R = keptTokensForBudget(retainBudget, { visualTokens: N, numLayers: L, k, finalWipeLayer: kf });

  // the views, then the visual tokens
  const want = ref.views.flatMap((v) => Array.from(v));
  expect(base.trace.pixelValues.length).toBe(want.length);
  expect(maxRelError(base.trace.pixelValues, want)).toBeLessThan(1e-6);
  const encoded = await m.runtime.encodeVisual(base.trace.visual.input);
  expect(
    maxRelError(
      encoded.features,
      ref.features.flatMap((r) => Array.from(r)),
    ),
  ).toBeLessThan(1e-4);
  expect(maxRelError(Array.from(encoded.clsAttention), ref.clsAttention)).toBeLessThan(1e-4);

  // every grid's tokens exist, no token is in two grids
  const seen = new Set<number>();
  for (const g of base.started.visualGrids)
    for (let r = 0; r < g.rows; r++)
      for (let c = 0; c < g.cols; c++) {
        const i = g.firstIndex + r * (g.rowStride ?? g.cols) + c;
        expect(i).toBeLessThan(N);
        expect(seen.has(i)).toBe(false);
        seen.add(i);
      }

  const scores = referenceScores(m, base.trace, ref.features, ref.clsAttention);
  const greedy = (kept?: number[]) =>
    greedyRef(
      m.weights,
      scores.rows,
      base.trace.imagePosition,
      N,
      MAX_TOKENS,
      kept ? { k, finalWipeLayer: kf, kept } : undefined,
    );
  const refOut = new Map<string, number[]>();
  const cached = (key: string, kept?: number[]) => {
    if (!refOut.has(key)) refOut.set(key, greedy(kept));
    return refOut.get(key) as number[];
  };
  // random weights that answer at once (EOS first) would make the greedy comparisons empty
  expect(cached("base").length).toBeGreaterThan(0);
  for (const mode of MODES) {
    const run = mode === "base" ? base : await generate(m, { ...params, mode, retainBudget });
    const kept = run.started.keptVisualIndices;
    const pruning = MODE_PLANS[mode].pruning;
    expect(run.started.visualTokens).toBe(N);
    expect(run.finished.stats.visualTokens).toBe(N);
    if (pruning === "none") expect(kept).toEqual(Array.from({ length: N }, (_, i) => i));
    else expect(kept).toHaveLength(R);
    const refKept =
      pruning === "twig"
        ? topR(scores.twig, R)
        : pruning === "fastv"
          ? topR(scores.fastv, R)
          : pruning === "visionzip"
            ? topR(scores.visionzip, R)
            : undefined;
    if (refKept) expect(kept, `${mode} keeps what the reference scores highest`).toEqual(refKept);
    const out = pruning === "none" ? cached("base") : cached(kept.join(), kept);
    expect(run.trace.result.outputIds, `${mode}'s greedy output`).toEqual(out);
    checked++;
  }
  return checked;
}

const decode = async (bytes: Uint8Array): Promise<Rgb> => {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
};

describe("LLaVA-NeXT (AnyRes) against the float64 reference", () => {
  let m: Model;
  beforeAll(async () => {
    m = await model("next", 21);
  });
  afterAll(async () => {
    await Promise.all([m?.engine.close(), m?.runtime.release()]);
  });

  // at most three times the largest resize each needs (else it is shrunk on decoding, as large pictures are)
  const PICTURES = [
    { name: "landscape 90x50 (2x2 tiles)", width: 90, height: 50, keep: 0.3 },
    { name: "portrait 44x90 (3x1 tiles)", width: 44, height: 90, keep: 0.4 },
    { name: "square 70x70 (2x2 tiles)", width: 70, height: 70, keep: 0.25 },
    { name: "wide 140x36 (1x3 tiles)", width: 140, height: 36, keep: 0.5 },
  ];
  let checked = 0;
  for (const p of PICTURES) {
    it(`${p.name}: views, features, kept tokens and greedy outputs of every mode`, async () => {
      const bytes = await png(photo(p.width, p.height, p.width));
      const ref = nextVisualRef(m.weights, await decode(bytes));
      const modes = await checkAgainstReference(
        m,
        { image: bytes, messages: [{ role: "user", content: "what colour is the circle ?" }] },
        ref,
        p.keep,
      );
      expect(modes).toBe(MODES.length);
      checked++;
    });
  }
  it("checked every picture", () => expect(checked).toBe(PICTURES.length));
});

describe("LLaVA-NeXT-Video against the float64 reference", () => {
  let m: Model;
  beforeAll(async () => {
    m = await model("next-video", 22);
  });
  afterAll(async () => {
    await Promise.all([m?.engine.close(), m?.runtime.release()]);
  });

  /** A clip: a photo whose discs drift a little from frame to frame. */
  const clip = (frames: number, width: number, height: number) =>
    Array.from({ length: frames }, (_, f) => photo(width, height, 100 + f));

  const CLIPS = [
    { name: "4 frames of 40x30", frames: 4, width: 40, height: 30, keep: 0.4 },
    { name: "8 frames of 24x36", frames: 8, width: 24, height: 36, keep: 0.3 },
  ];
  let checked = 0;
  for (const c of CLIPS) {
    it(`${c.name}, as a list of frames`, async () => {
      const frames = clip(c.frames, c.width, c.height);
      const bytes = await Promise.all(frames.map(png));
      const ref = videoVisualRef(m.weights, frames);
      const modes = await checkAgainstReference(
        m,
        { video: { frames: bytes }, messages: [{ role: "user", content: "what moves in the video ?" }] },
        ref,
        c.keep,
      );
      expect(modes).toBe(MODES.length);
      checked++;
    });
  }

  it("an 8-frame MP4, decoded by ffmpeg and sampled as the reference samples it", async () => {
    const frames = clip(12, 32, 32);
    const clipDir = mkdtempSync(join(dir, "clip-"));
    for (const [i, f] of frames.entries()) writeFileSync(join(clipDir, `${i}.png`), await png(f));
    const mp4 = join(clipDir, "clip.mp4");
    execFileSync("ffmpeg", [
      ...["-v", "error", "-framerate", "6", "-i", join(clipDir, "%d.png")],
      ...["-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", mp4],
    ]);
    // the reference reads every frame as ffmpeg decodes it and takes np.arange(0, 12, 12 / 8) of them
    const all = execFileSync("ffmpeg", ["-v", "error", "-i", mp4, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], {
      maxBuffer: 1 << 24,
    });
    const size = 32 * 32 * 3;
    expect(all.length).toBe(12 * size);
    const indices = [0, 1, 3, 4, 6, 7, 9, 10];
    const decoded = indices.map((i) => ({
      data: new Uint8Array(all.subarray(i * size, (i + 1) * size)),
      width: 32,
      height: 32,
    }));
    const ref = videoVisualRef(m.weights, decoded);
    const params = {
      video: { data: new Uint8Array(readFileSync(mp4)) },
      prompt: "USER: <video>\nwhat moves ? ASSISTANT:",
    };
    const modes = await checkAgainstReference(m, params, ref, 0.35);
    expect(m.engine.lastTrace?.visual.frameIndices).toEqual(indices);
    expect(modes).toBe(MODES.length);
    checked++;
  });
  it("checked every clip", () => expect(checked).toBe(CLIPS.length + 1));

  it("reads pictures with AnyRes too", async () => {
    const bytes = await png(photo(90, 50, 5));
    const ref = nextVisualRef(m.weights, await decode(bytes));
    const run = await generate(m, { image: bytes, messages: [{ role: "user", content: "what ?" }], mode: "base" });
    expect(run.started.visualTokens).toBe(ref.features.length);
    const encoded = await m.runtime.encodeVisual(run.trace.visual.input);
    expect(
      maxRelError(
        encoded.features,
        ref.features.flatMap((r) => Array.from(r)),
      ),
    ).toBeLessThan(1e-4);
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
