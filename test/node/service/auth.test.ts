/**
 * The service token through the real service process: inference calls without
 * it or with a wrong one are UNAUTHENTICATED over Connect, gRPC-Web, gRPC
 * (connect-node) and gRPC (grpc-js, the reference client); with it they are
 * served; Health stays open. The refusal is written from the headers alone
 * (hostile.test.ts shows that the body is not read).
 */
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import { grpcInferenceStub } from "../../support/service-client.js";

let service: GpuServiceProcess & { modelDir: string };
const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
const transports = (interceptors: Interceptor[] = []): [string, Transport][] => [
  ["Connect", createConnectTransport({ baseUrl: service.url, httpVersion: "1.1", interceptors })],
  ["gRPC-Web", createGrpcWebTransport({ baseUrl: service.url, httpVersion: "1.1", interceptors })],
  ["gRPC", createGrpcTransport({ baseUrl: service.url, interceptors })],
];

beforeAll(async () => {
  service = await startTinyModelService(0, 1, { TWIG_SERVICE_TOKEN: "s3cret-token" });
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

describe("service authentication", () => {
  it("refuses inference calls without the token or with a wrong one, in every protocol", async () => {
    let checked = 0;
    for (const [token, message] of [
      [undefined, "missing bearer token"],
      ["wrong", "invalid service token"],
    ] as const) {
      for (const [name, transport] of transports(token ? [bearer(token)] : [])) {
        const client = createClient(InferenceService, transport);
        const err = await client.listModels({}).then(
          () => undefined,
          (e) => ConnectError.from(e),
        );
        expect(err?.code, `${name}, token ${token}`).toBe(Code.Unauthenticated);
        expect(err?.rawMessage, name).toBe(message);
        const streamed = await (async () => {
          for await (const _ of client.generate({})) {
            // nothing comes
          }
        })().then(
          () => undefined,
          (e) => ConnectError.from(e),
        );
        expect(streamed?.code, `${name} Generate`).toBe(Code.Unauthenticated);
        checked++;
      }
    }
    expect(checked).toBe(6);
  });

  it("refuses grpc-js without the token, and serves it with the token", async () => {
    const stub = grpcInferenceStub(service.port);
    const list = (metadata: grpc.Metadata) =>
      new Promise<{ code: number; details?: string; models?: unknown[] }>((resolve) =>
        stub.listModels({}, metadata, (err: grpc.ServiceError | null, res: { models: unknown[] }) =>
          resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, models: res.models }),
        ),
      );
    expect(await list(new grpc.Metadata())).toEqual({
      code: grpc.status.UNAUTHENTICATED,
      details: "missing bearer token",
    });
    const good = new grpc.Metadata();
    good.set("authorization", "Bearer s3cret-token");
    const served = await list(good);
    expect(served.code).toBe(grpc.status.OK);
    expect(served.models).toHaveLength(1);
    stub.close();
  });

  it("accepts the token over Connect and over gRPC (HTTP/2)", async () => {
    let checked = 0;
    for (const [name, transport] of transports([bearer("s3cret-token")])) {
      const res = await createClient(InferenceService, transport).listModels({});
      expect(
        res.models.map((m) => m.name),
        name,
      ).toEqual(["tiny"]);
      checked++;
    }
    expect(checked).toBe(3);
  });

  it("keeps Health open for load balancers", async () => {
    const res = await createClient(Health, transports()[0][1]).check({ service: "" });
    expect(res.status).toBe(1);
  });
});
