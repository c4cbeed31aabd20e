/**
 * A plain @grpc/grpc-js client (real gRPC over HTTP/2, stubs loaded from the
 * .proto files at run time) calls the real GPU service process.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configOnlyModelsDir, type GpuServiceProcess, repoRoot, startGpuService } from "../support/gpu-service.js";

// biome-ignore lint/suspicious/noExplicitAny: grpc-js builds its stubs at run time
type AnyClient = any;

function load(file: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(file, { includeDirs: [join(repoRoot, "proto")], keepCase: false, enums: String });
  return grpc.loadPackageDefinition(def);
}

function unary<T>(client: AnyClient, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](req, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

describe("GPU service over real gRPC (grpc-js)", () => {
  let service: GpuServiceProcess;
  let health: AnyClient;
  let inference: AnyClient;
  const modelsDir = configOnlyModelsDir();

  beforeAll(async () => {
    service = await startGpuService(0, { TWIG_MODELS_DIR: modelsDir, TWIG_DEFAULT_MODEL: "tiny" });
    const healthPkg = load("grpc/health/v1/health.proto") as AnyClient;
    const inferencePkg = load("twigvlm/v1/inference.proto") as AnyClient;
    const creds = grpc.credentials.createInsecure();
    health = new healthPkg.grpc.health.v1.Health(`127.0.0.1:${service.port}`, creds);
    inference = new inferencePkg.twigvlm.v1.InferenceService(`127.0.0.1:${service.port}`, creds);
  }, 120_000);

  afterAll(async () => {
    health?.close();
    inference?.close();
    await service?.stop();
    rmSync(modelsDir, { recursive: true, force: true });
  });

  it("answers Health.Check for the whole service and for the inference service", async () => {
    expect(await unary(health, "check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await unary(health, "check", { service: "twigvlm.v1.InferenceService" })).toEqual({ status: "SERVING" });
  });

  it("answers NOT_FOUND for an unknown health service name", async () => {
    await expect(unary(health, "check", { service: "no.such.Service" })).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it("lists the models of the models directory", async () => {
    const res = await unary<{ models: Record<string, unknown>[] }>(inference, "listModels", {});
    expect(res.models).toHaveLength(1);
    expect(res.models[0]).toMatchObject({
      name: "tiny",
      architecture: "llava",
      visualTokens: 64,
      numLayers: 8,
      contextLength: 512,
      hasTwig: true,
      twigK: 2,
      twigT: 3,
      finalWipeLayer: 6,
      isDefault: true,
    });
  });

  it("streams Health.Watch over HTTP/2", async () => {
    const call = health.watch({ service: "" });
    const first = await new Promise((resolve, reject) => {
      call.once("data", resolve);
      call.once("error", reject);
    });
    call.cancel();
    expect(first).toEqual({ status: "SERVING" });
  });
});
