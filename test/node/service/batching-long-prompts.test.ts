/**
 * Long prompts in the real service process, over real gRPC: the NeXT variant's large canvases
 * (650 to 759 prompt rows, past the default TWIG_PREFILL_ROWS of 480) sent together to a batching
 * service are prefilled over several rounds in chunks (batch/batch-loop.ts), and each streams the
 * tokens the same request gets from a service that decodes one request at a time without
 * batching (no chunks at all); `twig_batch_prefilling` is 1 while one is being prefilled,
 * `twig_long_prefills_total` counts every one, and the batch ran more than one sequence at once.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, repoRoot, startGpuService } from "../../support/gpu-service.js";
import {
  type GrpcAsk,
  grpcGenerate,
  grpcInferenceStub,
  readMetric,
  sampleMetrics,
} from "../../support/service-client.js";

const canvas = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "next-test", `${String(i).padStart(4, "0")}.png`));

const models = mkdtempSync(join(tmpdir(), "twigserve-next-"));
let alone: GpuServiceProcess;
let batching: GpuServiceProcess;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
let aloneStub: any;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
let batchStub: any;

beforeAll(async () => {
  symlinkSync(join(repoRoot, "models", "demo-next"), join(models, "next"));
  const env = {
    TWIG_MODELS_DIR: models,
    TWIG_DEFAULT_MODEL: "next",
    TWIG_ENGINE_THREADS: "1",
    TWIG_ENGINE_WORKERS: "1",
  };
  [alone, batching] = await Promise.all([
    startGpuService(0, { ...env, TWIG_MAX_BATCH: "1" }),
    startGpuService(0, { ...env, TWIG_MAX_BATCH: "4" }),
  ]);
  aloneStub = grpcInferenceStub(alone.port);
  batchStub = grpcInferenceStub(batching.port);
}, 180_000);
afterAll(async () => {
  aloneStub?.close();
  batchStub?.close();
  await Promise.all([alone?.stop(), batching?.stop()]);
  rmSync(models, { recursive: true, force: true });
});

const MODES = ["MODE_TWIG", "MODE_TTP_ONLY", "MODE_BASE"];
// 192x192, 176x192, 192x160 canvases: 759, 694 and 648 prompt rows
const calls: Omit<GrpcAsk, "model">[] = [5, 9, 0, 13, 11, 12].map((p, i) => ({
  image: canvas(p),
  question: i % 2 === 0 ? "describe the picture ." : "how many objects are there ?",
  mode: MODES[i % MODES.length],
  maxTokens: 24,
}));

const WORKER = '{model="next",worker="0"}';
const SERIES = ["twig_batch_size", "twig_batch_prefilling"].map((m) => m + WORKER);
const LONG = 'twig_long_prefills_total{model="next"}';

describe("long prompts in a batching service (NeXT canvases)", () => {
  it("prefills them over several rounds and streams each the tokens it gets unbatched", async () => {
    const want: { ids: string[]; code: number }[] = [];
    for (const c of calls) want.push(await grpcGenerate(aloneStub, { model: "next", ...c }));
    for (const w of want) {
      expect(w.code).toBe(0);
      expect(w.ids.length).toBeGreaterThan(0);
    }
    const before = await readMetric(batching.metricsUrl, LONG);
    const running = Promise.all(calls.map((c) => grpcGenerate(batchStub, { model: "next", ...c })));
    const samples = await sampleMetrics(batching.metricsUrl, SERIES, running);
    const got = await running;
    got.forEach((g, i) => {
      expect(g, `request ${i}`).toEqual(want[i]);
    });
    expect((await readMetric(batching.metricsUrl, LONG)) - before).toBe(calls.length);
    expect(Math.max(...samples.map((s) => s[1]))).toBe(1); // seen while one was being prefilled
    expect(Math.max(...samples.map((s) => s[0]))).toBeGreaterThan(1);
  }, 600_000);
});
