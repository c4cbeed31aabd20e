/**
 * The edge's /healthz, inside workerd, against the real GPU service process:
 * without the admin token it says only ok or degraded; with it, why.
 */
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ADMIN_TOKEN, edgeWith } from "./edge-client.js";

const admin = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };

describe("GET /healthz", () => {
  it("says only ok without the admin token, and the GPU service's status with it", async () => {
    const open = await exports.default.fetch("http://edge.test/healthz");
    expect(open.status).toBe(200);
    expect(await open.json()).toEqual({ status: "ok" });
    const detailed = await exports.default.fetch("http://edge.test/healthz", admin);
    expect(await detailed.json()).toMatchObject({ status: "ok", gpuService: { status: "SERVING" }, config: [] });
    // a wrong token is no token: no details, and no 401 either
    const wrong = await exports.default.fetch("http://edge.test/healthz", {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}x` },
    });
    expect(await wrong.json()).toEqual({ status: "ok" });
  });

  it("answers 503 degraded when the GPU service cannot be reached, without saying where it is", async () => {
    const vars = { GPU_SERVICE_URL: "http://127.0.0.1:9" };
    const res = await edgeWith(vars, "/healthz");
    expect(res.status).toBe(503);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ status: "degraded" });
    expect(text).not.toContain("127.0.0.1");
    const detailed = await edgeWith(vars, "/healthz", admin);
    expect(await detailed.json()).toMatchObject({
      status: "degraded",
      gpuService: { url: "http://127.0.0.1:9", status: "UNREACHABLE", error: expect.any(String) },
    });
  });

  it("answers 503 degraded when the configuration is unsafe, and names the problem to the admin", async () => {
    const vars = { MODEL_ROUTES: JSON.stringify({ demo: ["http://10.1.2.3:50651"] }) };
    const res = await edgeWith(vars, "/healthz");
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: "degraded" });
    const detailed = (await (await edgeWith(vars, "/healthz", admin)).json()) as { config: string[] };
    expect(detailed.config).toEqual([
      expect.stringMatching(/MODEL_ROUTES\["demo"\]\[0\] is plain http to a non-loopback host/),
    ]);
  });
});
