/**
 * Continuous batching in the real service process for a model without a twig (a plain LLaVA
 * checkpoint: the demo model's files without `twig/`), over real gRPC: requests sent together
 * stream the tokens each gets when it runs alone, the worker's batch size scraped while they run
 * is above 1 and never above TWIG_MAX_BATCH, and it falls back to 0 when they are done; a mode
 * that needs a twig is refused with INVALID_ARGUMENT.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoModelDir, type GpuServiceProcess, repoRoot, startGpuService } from "../../support/gpu-service.js";
import {
  type GrpcAsk,
  grpcGenerate,
  grpcInferenceStub,
  sampleMetrics,
  waitForMetric,
} from "../../support/service-client.js";

const picture = (i: number) =>
  readFileSync(join(repoRoot, "training", "data", "test", `${String(i).padStart(4, "0")}.png`));

const models = mkdtempSync(join(tmpdir(), "twigserve-plain-"));
let service: GpuServiceProcess;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
let stub: any;

beforeAll(async () => {
  const dir = join(models, "plain");
  mkdirSync(dir);
  for (const f of readdirSync(demoModelDir)) if (f !== "twig") symlinkSync(join(demoModelDir, f), join(dir, f));
  service = await startGpuService(0, {
    TWIG_MODELS_DIR: models,
    TWIG_DEFAULT_MODEL: "plain",
    TWIG_ENGINE_THREADS: "1",
    TWIG_ENGINE_WORKERS: "1",
    TWIG_MAX_BATCH: "4",
  });
  stub = grpcInferenceStub(service.port);
}, 120_000);
afterAll(async () => {
  stub?.close();
  await service?.stop();
  rmSync(models, { recursive: true, force: true });
});

type Call = Omit<GrpcAsk, "model">;
const generate = (c: Call) => grpcGenerate(stub, { model: "plain", ...c });

const WORKER = '{model="plain",worker="0"}';
const SERIES = ["twig_batch_size", "twig_batch_waiting"].map((m) => m + WORKER);

const calls: Call[] = Array.from({ length: 8 }, (_, i) => ({
  image: picture(30 + i),
  question: i % 3 === 0 ? "what colour is the circle ?" : "describe the picture .",
  mode: "MODE_BASE",
  maxTokens: 8 + ((i * 11) % 40),
}));

describe("continuous batching in the service, model without a twig", () => {
  it("streams every request of a batch the tokens it gets alone", async () => {
    const alone: { ids: string[]; code: number }[] = [];
    for (const c of calls) alone.push(await generate(c));
    for (const a of alone) {
      expect(a.code).toBe(0);
      expect(a.ids.length).toBeGreaterThan(0);
    }
    const running = Promise.all(calls.map((c) => generate(c)));
    const samples = await sampleMetrics(service.metricsUrl, SERIES, running);
    const together = await running;
    together.forEach((t, i) => {
      expect(t, `request ${i}`).toEqual(alone[i]);
    });
    for (const [size, waiting] of samples) {
      expect(size).toBeLessThanOrEqual(4);
      expect(size + waiting).toBeLessThanOrEqual(4);
    }
    expect(Math.max(...samples.map((s) => s[0]))).toBeGreaterThan(1);
    expect(await waitForMetric(service.metricsUrl, SERIES[0], (v) => v === 0)).toBe(0);
  }, 300_000);

  it("refuses a mode that needs a twig", async () => {
    const r = await generate({ ...calls[0], mode: "MODE_TWIG" });
    expect(r.code).toBe(3); // INVALID_ARGUMENT
    expect(r.ids).toEqual([]);
  });
});
