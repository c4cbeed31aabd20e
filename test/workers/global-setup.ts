/**
 * Starts the real GPU service process before the Workers tests and hands its
 * URL to them (as the GPU_SERVICE_URL binding).
 */
import type { TestProject } from "vitest/node";
import { configOnlyModelsDir, startGpuService } from "../support/gpu-service.js";

export const GPU_PORT = 47321;

export default async function setup(project: TestProject) {
  const service = await startGpuService(GPU_PORT, {
    TWIG_MODELS_DIR: configOnlyModelsDir(),
    TWIG_DEFAULT_MODEL: "tiny",
  });
  project.provide("gpuServiceUrl", service.url);
  return () => service.stop();
}

declare module "vitest" {
  export interface ProvidedContext {
    gpuServiceUrl: string;
  }
}
