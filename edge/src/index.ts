/**
 * The TwigServe edge: a Hono app on Cloudflare Workers in front of the GPU service.
 */
import { HealthCheckResponse_ServingStatus as Status } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { Hono } from "hono";
import type { Env } from "./env.js";
import { gpuClients } from "./gpu/client.js";

const app = new Hono<{ Bindings: Env }>();

/** Liveness of the edge and health of the GPU service behind it. */
app.get("/healthz", async (c) => {
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
});

export default app;
