/**
 * The GPU service process: loads the model registry, serves
 * grpc.health.v1.Health and twigvlm.v1.InferenceService on one port.
 */
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { loadConfig } from "./config.js";
import { HealthState, healthService, ServingStatus } from "./health.js";
import { inferenceService } from "./inference.js";
import { scanModels } from "./registry.js";
import { listen } from "./server.js";

const config = loadConfig();
const { models, errors } = scanModels(config.modelsDir);
for (const error of errors) console.error(`gpu-service: skipping model: ${error}`);

const health = new HealthState();
health.set("", ServingStatus.NOT_SERVING);
health.set(InferenceService.typeName, ServingStatus.NOT_SERVING);

const server = await listen(
  (router) => {
    router.service(Health, healthService(health));
    router.service(InferenceService, inferenceService({ models: () => models, defaultModel: config.defaultModel }));
  },
  config.host,
  config.port,
);

for (const model of models) health.set(model.name, ServingStatus.SERVING);
health.set("", ServingStatus.SERVING);
health.set(InferenceService.typeName, ServingStatus.SERVING);
console.log(
  `gpu-service listening on ${config.host}:${server.port} (gRPC, gRPC-Web, Connect); models: ${
    models.map((m) => m.name).join(", ") || "none"
  }`,
);

let stopping = false;
function stop(signal: string): void {
  if (stopping) return;
  stopping = true;
  console.log(`gpu-service: ${signal}, shutting down`);
  health.set("", ServingStatus.NOT_SERVING);
  health.set(InferenceService.typeName, ServingStatus.NOT_SERVING);
  server.close().then(() => process.exit(0));
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
