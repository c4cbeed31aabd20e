/**
 * The edge's /healthz, inside workerd, against the real GPU service process.
 */
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import app from "../../edge/src/index.js";

describe("GET /healthz", () => {
  it("reports the GPU service as serving", async () => {
    const res = await exports.default.fetch("http://edge.test/healthz");
    const body = await res.json();
    expect(body).toMatchObject({ status: "ok", gpuService: { status: "SERVING" } });
    expect(res.status).toBe(200);
  });

  it("answers 503 when the GPU service cannot be reached", async () => {
    const res = await app.request("/healthz", {}, { ...env, GPU_SERVICE_URL: "http://127.0.0.1:9" });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: "unavailable", gpuService: { status: "UNREACHABLE" } });
  });
});
