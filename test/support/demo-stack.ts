/**
 * The whole service as `npm start` runs it, for tests and scripts that use it
 * as a user would: the GPU service on the shipped models (`models/`, the demo
 * model the default) and the edge under `wrangler dev` routing each of them, both on free loopback
 * ports, with the local dev key and an admin token (fresh ones, edge-dev.ts).
 */
import { join } from "node:path";
import { scanModels } from "../../gpu-service/src/server/registry.js";
import { type EdgeDevProcess, startEdgeDev } from "./edge-dev.js";
import { type GpuServiceProcess, repoRoot, startGpuService } from "./gpu-service.js";

export const DEMO_MODEL = "demo";

export interface DemoStack {
  gpu: GpuServiceProcess;
  edge: EdgeDevProcess;
  /** The local development API key the edge seeds its dev tenant with. */
  devKey: string;
  /** The admin API's bearer token on this edge. */
  adminToken: string;
  stop(): Promise<void>;
}

/**
 * Starts the GPU service on models/ (demo the default) and wrangler dev in front of it, routing every model
 * there as `npm start` does; `vars` adds Worker variables.
 */
export async function startDemoStack(vars: Record<string, string> = {}): Promise<DemoStack> {
  const modelsDir = join(repoRoot, "models");
  const gpu = await startGpuService(0, {
    TWIG_MODELS_DIR: modelsDir,
    TWIG_DEFAULT_MODEL: DEMO_MODEL,
    TWIG_ENGINE_THREADS: "1",
  });
  let edge: EdgeDevProcess;
  try {
    const names = scanModels(modelsDir).models.map((m) => m.name);
    edge = await startEdgeDev({
      GPU_SERVICE_URL: gpu.url,
      MODEL_ROUTES: JSON.stringify(Object.fromEntries(names.map((name) => [name, [gpu.url]]))),
      ...vars,
    });
  } catch (err) {
    await gpu.stop();
    throw err;
  }
  return {
    gpu,
    edge,
    devKey: edge.secrets.DEV_API_KEY,
    adminToken: edge.secrets.ADMIN_TOKEN,
    stop: async () => {
      await edge.stop();
      await gpu.stop();
    },
  };
}

/** A fresh tenant with its own key, made through the admin API of `stack` (any edge and its admin token). */
export async function newTenant(
  stack: { edge: { url: string }; adminToken: string },
  settings: Record<string, unknown>,
): Promise<{ id: string; key: string }> {
  const admin = { authorization: `Bearer ${stack.adminToken}`, "content-type": "application/json" };
  const res = await fetch(`${stack.edge.url}/admin/tenants`, {
    method: "POST",
    headers: admin,
    body: JSON.stringify(settings),
  });
  if (res.status !== 201) throw new Error(`creating a tenant: ${res.status} ${await res.text()}`);
  const { id } = (await res.json()) as { id: string };
  const k = await fetch(`${stack.edge.url}/admin/tenants/${id}/keys`, { method: "POST", headers: admin });
  if (k.status !== 201) throw new Error(`issuing a key: ${k.status} ${await k.text()}`);
  return { id, key: ((await k.json()) as { key: string }).key };
}
