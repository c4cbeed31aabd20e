/**
 * Starts the real GPU service process (the same entry point as `npm start`)
 * on a loopback port for a test, and stops it afterwards.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeTinyModel } from "../../gpu-service/tools/make-tiny/tiny-model.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/**
 * A child's exit code once it has exited (null when a signal ended it), at once when it already has:
 * a child a signal ended has no exit code, only a signal code, and its "exit" event is past.
 */
export function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

export interface GpuServiceProcess {
  url: string;
  port: number;
  /** The Prometheus endpoint (on a port the system picked, read from the service's log). */
  metricsUrl: string;
  child: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
}

/** A models directory with one config-only model, enough for ListModels. */
export function configOnlyModelsDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "twigserve-models-"));
  mkdirSync(join(dir, "tiny", "twig"), { recursive: true });
  writeFileSync(
    join(dir, "tiny", "config.json"),
    JSON.stringify({
      model_type: "llava",
      text_config: { num_hidden_layers: 8, max_position_embeddings: 512 },
      vision_config: { image_size: 64, patch_size: 8 },
    }),
  );
  writeFileSync(
    join(dir, "tiny", "twig", "config.json"),
    JSON.stringify({ twig_K: 2, twig_T: 3, final_wipe_layer: 6 }),
  );
  return dir;
}

/** Starts the service on `port` (0: a free port the system picks, read back from the service's log). */
export async function startGpuService(port: number, env: Record<string, string> = {}): Promise<GpuServiceProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "gpu-service/src/main.ts")], {
    cwd: repoRoot,
    env: {
      ...process.env,
      TWIG_GPU_HOST: "127.0.0.1",
      TWIG_GPU_PORT: String(port),
      TWIG_METRICS_PORT: "0",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const collect = (d: Buffer) => {
    output += d;
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      // a service that never said it serves must not outlive the test that started it
      child.kill("SIGKILL");
      reject(new Error(`GPU service did not start in time:\n${output}`));
    }, 110_000);
    const onData = () => {
      if (output.includes("gpu-service: serving")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`GPU service exited with ${code}:\n${output}`));
    });
  });
  const metricsPort = /metrics on http:\/\/[^:]+:(\d+)\/metrics/.exec(output)?.[1];
  // port 0: the system picks a free one, and the service says which
  const actual = port || Number(/gpu-service listening on [^:\s]+:(\d+)/.exec(output)?.[1]);
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    child,
    output: () => output,
    stop: async () => {
      const ended = exitOf(child);
      child.kill("SIGTERM"); // nothing when it has exited
      await ended;
    },
  };
}

/** The shipped demo model, trained (models/demo). */
export const demoModelDir = join(repoRoot, "models", "demo");

/** The real service on the shipped demo model (the repository's models/, "demo" by default), one engine thread, on a port the system picks. */
export function startDemoService(env: Record<string, string> = {}): Promise<GpuServiceProcess> {
  return startGpuService(0, {
    TWIG_MODELS_DIR: join(repoRoot, "models"),
    TWIG_DEFAULT_MODEL: "demo",
    TWIG_ENGINE_THREADS: "1",
    ...env,
  });
}

/**
 * The model the service tests serve: the directory named by TWIG_TEST_MODEL_DIR when it is set,
 * else the demo model (`models/demo`), else a fresh tiny random model. Either way it is served as "tiny".
 */
export const testModelDir = process.env.TWIG_TEST_MODEL_DIR
  ? resolve(process.env.TWIG_TEST_MODEL_DIR)
  : existsSync(join(demoModelDir, "config.json"))
    ? demoModelDir
    : undefined;

/**
 * The real service on the test model (see `testModelDir`: by default the demo model; a fresh tiny
 * random model written with `seed` without it) named "tiny" (the default), one engine thread.
 * `alwaysTiny` keeps the tiny random model: tests that need long generations use it
 * (its greedy answers run to max_tokens; a trained model's stop early).
 * `modelDir` is that model's directory; `stop()` also removes what was written.
 */
export async function startTinyModelService(
  port: number,
  seed: number,
  env: Record<string, string> = {},
  opts: { alwaysTiny?: boolean } = {},
): Promise<GpuServiceProcess & { modelDir: string }> {
  const models = mkdtempSync(join(tmpdir(), "twigserve-tiny-"));
  const chosen = opts.alwaysTiny ? undefined : testModelDir;
  const modelDir = chosen ?? join(models, "tiny");
  if (chosen) symlinkSync(chosen, join(models, "tiny"));
  else writeTinyModel(modelDir, seed, "hf");
  const service = await startGpuService(port, {
    TWIG_MODELS_DIR: models,
    TWIG_DEFAULT_MODEL: "tiny",
    TWIG_ENGINE_THREADS: "1",
    ...env,
  });
  return {
    ...service,
    modelDir,
    stop: async () => {
      await service.stop();
      rmSync(models, { recursive: true, force: true });
    },
  };
}
