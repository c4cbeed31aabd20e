/**
 * The GPU service process: serves grpc.health.v1.Health and
 * twigvlm.v1.InferenceService on one port, loads every model of the models
 * directory into engine workers (Health says NOT_SERVING until they are loaded
 * and warmed up), and drains on SIGTERM.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { bearerCheck } from "./auth.js";
import { loadConfig } from "./config.js";
import type { Engine } from "./engine/types.js";
import { WorkerEngine } from "./engine/worker-host.js";
import { HealthState, healthService, ServingStatus } from "./health.js";
import { inferenceService, type ServedModel } from "./inference.js";
import { createLogger } from "./log.js";
import { metrics, serveMetrics } from "./metrics.js";
import { scanModels } from "./registry.js";
import { unparsableRequests } from "./request-errors.js";
import { withRequestLog } from "./request-log.js";
import { Scheduler } from "./scheduler.js";
import { listen } from "./server.js";
import { DEFAULT_LIMITS, requestMaxBytes } from "./validate.js";

const config = loadConfig();
const log = createLogger(config.logLevel);
const { models, errors } = scanModels(config.modelsDir);
for (const error of errors) log.warn(`gpu-service: skipping model: ${error}`);
const served: ServedModel[] = models.map((entry) => ({ entry }));
let draining = false;
let inFlight = 0;

const health = new HealthState();
const setOverall = (status: ServingStatus) => {
  health.set("", status);
  health.set(InferenceService.typeName, status);
};
setOverall(ServingStatus.NOT_SERVING);
for (const m of served) health.set(m.entry.name, ServingStatus.NOT_SERVING);

const inference = inferenceService({
  models: () => served,
  defaultModel: config.defaultModel,
  draining: () => draining,
  limits: { ...DEFAULT_LIMITS, image: config.image, video: config.video },
});
const generate = withRequestLog(inference.generate.bind(inference), {
  logger: log,
  logPrompts: config.logPrompts,
  defaultModel: config.defaultModel,
});
const server = await listen(
  (router) => {
    router.service(Health, healthService(health, config.maxHealthWatches));
    router.service(InferenceService, {
      ...inference,
      async *generate(req, ctx) {
        // a stream ends by finishing, failing, or its caller going away (then the
        // generator may never be resumed, so the abort signal counts it out too)
        inFlight++;
        let counted = true;
        const done = () => {
          if (counted) inFlight--;
          counted = false;
        };
        ctx.signal.addEventListener("abort", done, { once: true });
        try {
          yield* generate(req, ctx);
        } catch (err) {
          // label by a served model's name only: callers must not be able to mint label values
          const name = req.model || config.defaultModel;
          const model = served.some((m) => m.entry.name === name) ? name : "unknown";
          metrics.errors.inc({ model, code: Code[ConnectError.from(err).code] });
          throw err;
        } finally {
          done();
        }
      },
    });
  },
  {
    host: config.host,
    port: config.port,
    tls: config.tls,
    interceptors: [unparsableRequests],
    readMaxBytes: requestMaxBytes(config.image.maxBytes),
    idleTimeoutMs: config.idleTimeoutMs,
    checkHeaders: bearerCheck(config.serviceToken, [Health.typeName]),
  },
);
log.info(
  `gpu-service listening on ${config.host}:${server.port} (gRPC, gRPC-Web, Connect${config.tls ? " over TLS" : ", cleartext"}); models: ${models.map((m) => m.name).join(", ") || "none"}`,
);

async function warmUp(engine: Engine): Promise<void> {
  const image = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 120, g: 120, b: 120 } } })
    .png()
    .toBuffer();
  await engine.generate(
    {
      image,
      messages: [{ role: "user", content: "describe the picture" }],
      maxTokens: 2,
      temperature: 0,
      topP: 1,
      stop: [],
      mode: engine.info.twig ? "twig" : "base",
    },
    () => {},
  );
}

try {
  const m = await serveMetrics(config.host, config.metricsPort);
  log.info(`gpu-service: metrics on http://${config.host}:${m.port}/metrics`);
} catch (err) {
  log.warn(`gpu-service: metrics endpoint not started: ${(err as Error).message}`);
}

for (const m of served) {
  try {
    const t0 = performance.now();
    const engines = await Promise.all(
      Array.from({ length: config.workersPerModel }, () =>
        WorkerEngine.start(m.entry.dir, {
          threads: config.engineThreads,
          name: m.entry.name,
          imageLimits: config.image,
          videoLimits: config.video,
          precision: config.precision,
          attention: config.attention,
          provider: config.provider,
          graphCacheDir: config.graphCacheDir,
        }),
      ),
    );
    await Promise.all(engines.map(warmUp));
    m.engine = engines[0];
    m.scheduler = new Scheduler(engines, config.maxQueue);
    health.set(m.entry.name, ServingStatus.SERVING);
    log.info(
      `gpu-service: model ${m.entry.name} ready (${config.workersPerModel} worker(s), ${Math.round(performance.now() - t0)} ms)`,
    );
  } catch (err) {
    log.error(`gpu-service: model ${m.entry.name} failed to load: ${(err as Error).message}`);
  }
}
if (!draining) setOverall(ServingStatus.SERVING);
log.info("gpu-service: serving");

async function stop(signal: string): Promise<void> {
  if (draining) return;
  draining = true;
  log.info(`gpu-service: ${signal}, draining (${inFlight} in flight, grace ${config.drainGraceMs} ms)`);
  setOverall(ServingStatus.NOT_SERVING);
  const deadline = Date.now() + config.drainGraceMs;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await server.close();
  process.exit(0);
}
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
