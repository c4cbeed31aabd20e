/**
 * The GPU service process: serves grpc.health.v1.Health and
 * twigvlm.v1.InferenceService on one port, loads every model of the models
 * directory into engine workers (Health says NOT_SERVING until they are loaded
 * and warmed up, and for a model while none of its workers is up), and drains
 * on SIGTERM.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { bearerCheck } from "./server/auth.js";
import { loadConfig, type ServiceConfig } from "./server/config.js";
import { HealthState, healthService, ServingStatus } from "./server/health.js";
import { inferenceService, type ServedModel } from "./server/inference.js";
import { listen } from "./server/listen.js";
import { createLogger } from "./server/log.js";
import { metrics, serveMetrics } from "./server/metrics.js";
import { startModelWorkers } from "./server/model-workers.js";
import { scanModels } from "./server/registry.js";
import { callerErrors } from "./server/request-errors.js";
import { withRequestLog } from "./server/request-log.js";
import type { Supervisor } from "./server/supervisor.js";
import { DEFAULT_LIMITS, requestMaxBytes } from "./server/validate.js";

let config: ServiceConfig;
try {
  config = loadConfig();
} catch (err) {
  // a configuration the service refuses: say why, and exit before listening
  console.error(`gpu-service: ${(err as Error).message}`);
  process.exit(2);
}
const log = createLogger(config.logLevel);
const { models, errors } = scanModels(config.modelsDir);
for (const error of errors) log.warn(`gpu-service: skipping model: ${error}`);
const served: ServedModel[] = models.map((entry) => ({ entry }));
let draining = false;
let inFlight = 0;

const health = new HealthState();
const supervisors: Supervisor[] = [];
let loaded = false;
/** The whole service serves once loading is over, while no model that loaded is without a worker, until it drains. */
const refreshOverall = () => {
  const up = loaded && !draining && supervisors.every((s) => s.live > 0);
  const status = up ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  health.set("", status);
  health.set(InferenceService.typeName, status);
};
refreshOverall();
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
    interceptors: [callerErrors(log)],
    readMaxBytes: requestMaxBytes(config),
    idleTimeoutMs: config.idleTimeoutMs,
    checkHeaders: bearerCheck(config.serviceToken, [Health.typeName]),
  },
);
log.info(
  `gpu-service listening on ${config.host}:${server.port} (gRPC, gRPC-Web, Connect${config.tls ? " over TLS" : ", cleartext"}); models: ${models.map((m) => m.name).join(", ") || "none"}`,
);

try {
  const m = await serveMetrics(config.metricsHost, config.metricsPort);
  log.info(`gpu-service: metrics on http://${config.metricsHost}:${m.port}/metrics`);
} catch (err) {
  log.warn(`gpu-service: metrics endpoint not started: ${(err as Error).message}`);
}

for (const m of served) {
  try {
    const t0 = performance.now();
    const onLive = (live: number) => {
      health.set(m.entry.name, live > 0 ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
      refreshOverall();
    };
    supervisors.push(await startModelWorkers(m, config, log, onLive));
    log.info(
      `gpu-service: model ${m.entry.name} ready (${config.workersPerModel} worker(s), ${Math.round(performance.now() - t0)} ms)`,
    );
  } catch (err) {
    log.error(`gpu-service: model ${m.entry.name} failed to load: ${(err as Error).message}`);
  }
}
loaded = true;
refreshOverall();
log.info("gpu-service: serving");

async function stop(signal: string): Promise<void> {
  if (draining) return;
  draining = true;
  log.info(`gpu-service: ${signal}, draining (${inFlight} in flight, grace ${config.drainGraceMs} ms)`);
  refreshOverall();
  const deadline = Date.now() + config.drainGraceMs;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const s of supervisors) void s.stop(); // no restarts while the process ends
  await server.close();
  process.exit(0);
}
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
