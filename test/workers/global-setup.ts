/**
 * Before the Workers tests: starts the real GPU service process (for /healthz)
 * and two scripted GPU services (test/support/scripted-gpu-service.ts), and
 * hands the edge a MODEL_ROUTES table over them and a port where nothing
 * listens:
 *
 *   scripted      -> [dead port, scripted A]     failover past a refused connection
 *   scripted-pair -> [draining B, scripted A]    failover past UNAVAILABLE
 *   unreachable   -> [dead port, dead port 2]    503
 */
import { rmSync } from "node:fs";
import type { TestProject } from "vitest/node";
import { configOnlyModelsDir, startGpuService } from "../support/gpu-service.js";
import { startScriptedGpuService } from "../support/scripted-gpu-service.js";

export const GPU_PORT = 27321;
export const SCRIPTED_PORT = 27110;
export const DRAINING_PORT = 27111;
export const DEAD_URLS = ["http://127.0.0.1:27118", "http://127.0.0.1:27119"];

export default async function setup(project: TestProject) {
  const modelsDir = configOnlyModelsDir();
  const service = await startGpuService(GPU_PORT, {
    TWIG_MODELS_DIR: modelsDir,
    TWIG_DEFAULT_MODEL: "tiny",
  });
  const scripted = await startScriptedGpuService(SCRIPTED_PORT);
  const draining = await startScriptedGpuService(DRAINING_PORT, { unavailable: true });
  project.provide("gpuServiceUrl", service.url);
  project.provide("scriptedUrl", scripted.url);
  project.provide("drainingUrl", draining.url);
  project.provide(
    "modelRoutes",
    JSON.stringify({
      scripted: [DEAD_URLS[0], scripted.url],
      "scripted-pair": [draining.url, scripted.url],
      unreachable: DEAD_URLS,
    }),
  );
  return async () => {
    await Promise.all([service.stop(), scripted.close(), draining.close()]);
    rmSync(modelsDir, { recursive: true, force: true });
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    gpuServiceUrl: string;
    scriptedUrl: string;
    drainingUrl: string;
    modelRoutes: string;
  }
}
