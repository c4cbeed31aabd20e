/** GET /healthz: liveness of the edge and health of the GPU service at GPU_SERVICE_URL. */
import { HealthCheckResponse_ServingStatus as Status } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import type { Context } from "hono";
import type { AppEnv } from "../app-types.js";
import { gpuClients } from "../gpu/client.js";

export async function healthz(c: Context<AppEnv>): Promise<Response> {
  const url = c.env.GPU_SERVICE_URL;
  try {
    const { health } = gpuClients(url);
    const res = await health.check({ service: "" }, { signal: AbortSignal.timeout(5000) });
    const serving = res.status === Status.SERVING;
    return c.json(
      { status: serving ? "ok" : "degraded", gpuService: { url, status: Status[res.status] } },
      serving ? 200 : 503,
    );
  } catch (err) {
    return c.json(
      { status: "unavailable", gpuService: { url, status: "UNREACHABLE", error: (err as Error).message } },
      503,
    );
  }
}
