/**
 * Before the Workers tests: starts the real GPU service process (on the demo
 * model), one scripted GPU service
 * (test/support/scripted-gpu-service.ts) per test file that talks to one, so
 * that no file sees another's calls or counters, a draining scripted service,
 * a TCP server that accepts and never answers, and finds two ports where
 * nothing listens. Every port comes from the system. The edge gets a
 * MODEL_ROUTES table over them, each file using its own model names:
 *
 *   scripted        -> [dead port, chat's service]          failover past a refused connection
 *   scripted-pair   -> [draining, chat's service]           failover past UNAVAILABLE
 *   unreachable     -> [dead port, dead port 2]             503
 *   files           -> [files' service]
 *   limits          -> [limits' service]
 *   calls           -> [gpu-calls' service]
 *   calls-hanging   -> [hanging TCP server, gpu-calls' service]  failover past a shard that never answers
 *   disconnect      -> [disconnect's service]
 *   bodies          -> [body-limits' service]
 *   demo            -> [a frame proxy in front of the real GPU service]
 *
 * (routing.test.ts sets its own routes over its two services, routing and
 * routingB, through the admin API.)
 *
 * A control (test/support/gpu-pause.ts) lets a test freeze the real GPU
 * service at the first delta of the next answer through the proxy, resume it,
 * and read its log lines.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { edgeModelsDir } from "../support/edge-models.js";
import { startFrameProxy } from "../support/frame-proxy.js";
import { GpuPause, startGpuControl } from "../support/gpu-pause.js";
import { repoRoot, startGpuService } from "../support/gpu-service.js";
import { startHangingServer } from "../support/hanging-server.js";
import { freePort } from "../support/ports.js";
import { startScriptedGpuService } from "../support/scripted-gpu-service.js";

/** The test files that each get their own scripted GPU service. */
const FILES = ["chat", "files", "limits", "calls", "disconnect", "bodies", "routing", "routingB"] as const;
export type ScriptedFor = Record<(typeof FILES)[number], string>;

export default async function setup(project: TestProject) {
  const models = edgeModelsDir();
  const service = await startGpuService(0, {
    TWIG_MODELS_DIR: models.dir,
    TWIG_DEFAULT_MODEL: models.model,
    TWIG_ENGINE_THREADS: "1",
  });
  const scripted = await Promise.all(FILES.map(() => startScriptedGpuService()));
  const draining = await startScriptedGpuService({ unavailable: true });
  const hanging = await startHangingServer();
  const proxy = await startFrameProxy(service.url);
  const pause = new GpuPause(service);
  const control = await startGpuControl(pause, proxy, hanging);
  const dead = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
  const urls = Object.fromEntries(FILES.map((f, i) => [f, scripted[i].url])) as ScriptedFor;

  project.provide("gpuServiceUrl", service.url);
  project.provide("gpuControlUrl", control.url);
  // a held-out scene of the demo model's world (workerd has no file system to read it from)
  project.provide("demoScene", readFileSync(join(repoRoot, "training/data/test/0000.png")).toString("base64"));
  project.provide("scripted", urls);
  project.provide("drainingUrl", draining.url);
  project.provide(
    "modelRoutes",
    JSON.stringify({
      scripted: [dead[0], urls.chat],
      "scripted-pair": [draining.url, urls.chat],
      unreachable: dead,
      files: [urls.files],
      limits: [urls.limits],
      calls: [urls.calls],
      "calls-hanging": [hanging.url, urls.calls],
      disconnect: [urls.disconnect],
      bodies: [urls.bodies],
      demo: [proxy.url],
    }),
  );
  return async () => {
    pause.resume();
    await Promise.all([
      service.stop(),
      draining.close(),
      hanging.close(),
      proxy.close(),
      control.close(),
      ...scripted.map((s) => s.close()),
    ]);
    models.remove();
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    gpuServiceUrl: string;
    gpuControlUrl: string;
    demoScene: string;
    scripted: ScriptedFor;
    drainingUrl: string;
    modelRoutes: string;
  }
}
