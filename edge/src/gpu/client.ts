/**
 * Clients for the GPU service, over the Connect protocol on fetch (Workers
 * cannot speak HTTP/2 gRPC). workerd rejects fetch's default
 * `redirect: "error"`, so the transport gets a fetch that asks for "manual".
 * With a token, every call carries `authorization: Bearer <token>`.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";

export interface GpuClients {
  health: Client<typeof Health>;
  inference: Client<typeof InferenceService>;
}

export function gpuClients(baseUrl: string, token?: string): GpuClients {
  const transport = createConnectTransport({
    baseUrl,
    useBinaryFormat: true,
    fetch: (input, init) => fetch(input, { ...init, redirect: "manual" }),
    interceptors: token
      ? [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ]
      : [],
  });
  return {
    health: createClient(Health, transport),
    inference: createClient(InferenceService, transport),
  };
}
