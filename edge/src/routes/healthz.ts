/**
 * GET /healthz: `{"status": "ok"}` (200) when the edge's configuration is sound
 * and the GPU service at GPU_SERVICE_URL reports SERVING, `{"status":
 * "degraded"}` (503) otherwise. Nothing else without the admin token; with
 * `Authorization: Bearer <ADMIN_TOKEN>` the answer adds the GPU service's URL
 * and status (or why it could not be reached) and the configuration problems.
 */
import { HealthCheckResponse_ServingStatus as Status } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import type { Context } from "hono";
import type { AppEnv } from "../app-types.js";
import { hasAdminToken } from "../auth/admin.js";
import { reportConfigProblems } from "../config/check.js";
import { gpuClients } from "../gpu/client.js";
import { gpuUrlProblem } from "../gpu/model-routes.js";

const PROBE_TIMEOUT_MS = 5000;

async function probe(url: string): Promise<{ url: string; status: string; error?: string }> {
  const unsafe = gpuUrlProblem(url, "GPU_SERVICE_URL");
  if (unsafe) return { url, status: "NOT_PROBED", error: unsafe };
  try {
    const res = await gpuClients(url).health.check({ service: "" }, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    return { url, status: Status[res.status] };
  } catch (err) {
    return { url, status: "UNREACHABLE", error: (err as Error).message };
  }
}

export async function healthz(c: Context<AppEnv>): Promise<Response> {
  const config = reportConfigProblems(c.env);
  const gpuService = await probe(c.env.GPU_SERVICE_URL);
  const ok = config.length === 0 && gpuService.status === "SERVING";
  const status = ok ? "ok" : "degraded";
  const details = await hasAdminToken(c.env, c.req.header("authorization"));
  return c.json(details ? { status, gpuService, config } : { status }, ok ? 200 : 503);
}
