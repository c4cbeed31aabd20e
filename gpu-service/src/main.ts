/**
 * The GPU service process: serves grpc.health.v1.Health and
 * twigvlm.v1.InferenceService on one port, loads every model of the models
 * directory into engine workers (Health says NOT_SERVING until they are loaded
 * and warmed up, and for a model while none of its workers is up), and drains
 * on SIGTERM.
 */

import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { bearerCheck } from "./server/auth.js";
import { errorCounts, InFlight } from "./server/call-metrics.js";
import { loadConfig, type ServiceConfig } from "./server/config.js";
import { HealthState, healthService, ServingStatus } from "./server/health.js";
import { inferenceService, type ServedModel } from "./server/inference.js";
import { listen } from "./server/listen.js";
import { createLogger } from "./server/log.js";
import { serveMetrics } from "./server/metrics.js";
import { startModelWorkers } from "./server/model-workers.js";
import { scanModels } from "./server/registry.js";
import { callerErrors } from "./server/request-errors.js";
import { requestLog } from "./server/request-log.js";
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
const inFlight = new InFlight();

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
const server = await listen(
  (router) => {
    router.service(Health, healthService(health, config.maxHealthWatches));
    router.service(InferenceService, inference);
  },
  {
    host: config.host,
    port: config.port,
    tls: config.tls,
    // outermost first: what callers see of errors; then, around each Generate call, the count of calls in
    // flight, the errors by model and code, and its log line (server/generate-calls.ts says how they wrap a stream)
    interceptors: [
      callerErrors(log),
      inFlight.interceptor,
      errorCounts(config.defaultModel, (name) => served.some((m) => m.entry.name === name)),
      requestLog({ logger: log, logPrompts: config.logPrompts, defaultModel: config.defaultModel }),
    ],
    readMaxBytes: requestMaxBytes(config),
    idleTimeoutMs: config.idleTimeoutMs,
    // the service token is checked here, from the headers, before a body is read: not an interceptor, since
    // connect-node reads, decompresses and parses a unary request before any interceptor runs
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
  log.info(`gpu-service: ${signal}, draining (${inFlight.count} in flight, grace ${config.drainGraceMs} ms)`);
  refreshOverall();
  const deadline = Date.now() + config.drainGraceMs;
  while (inFlight.count > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const s of supervisors) void s.stop(); // no restarts while the process ends
  await server.close();
  process.exit(0);
}
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
