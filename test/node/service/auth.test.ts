import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";

const PORT = 27241;
let service: GpuServiceProcess & { modelDir: string };
const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
const connectTo = (interceptors: Interceptor[] = []) =>
  createConnectTransport({ baseUrl: `http://127.0.0.1:${PORT}`, httpVersion: "1.1", interceptors });

beforeAll(async () => {
  service = await startTinyModelService(PORT, 1, { TWIG_SERVICE_TOKEN: "s3cret-token" });
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

describe("service authentication", () => {
  it("refuses inference calls without the token or with a wrong one", async () => {
    for (const transport of [connectTo(), connectTo([bearer("wrong")])]) {
      const err = await createClient(InferenceService, transport)
        .listModels({})
        .then(
          () => undefined,
          (e) => ConnectError.from(e),
        );
      expect(err?.code).toBe(Code.Unauthenticated);
    }
  });

  it("accepts the token over Connect and over gRPC (HTTP/2)", async () => {
    const viaConnect = await createClient(InferenceService, connectTo([bearer("s3cret-token")])).listModels({});
    expect(viaConnect.models.map((m) => m.name)).toEqual(["tiny"]);
    const grpc = createGrpcTransport({ baseUrl: `http://127.0.0.1:${PORT}`, interceptors: [bearer("s3cret-token")] });
    const viaGrpc = await createClient(InferenceService, grpc).listModels({});
    expect(viaGrpc.models).toHaveLength(1);
  });

  it("keeps Health open for load balancers", async () => {
    const res = await createClient(Health, connectTo()).check({ service: "" });
    expect(res.status).toBe(1);
  });
});
