/**
 * Safe configuration: GPU routes over plain http only to loopback hosts (the
 * edge refuses to serve otherwise, saying why in its log only), malformed
 * numeric settings refused likewise, and the dev tenant seeded only in local
 * development (ENVIRONMENT=development and wrangler's local D1), with a
 * malformed DEV_API_KEY ignored rather than failing requests.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { newApiKey } from "../../edge/src/auth/keys.js";
import { configProblems } from "../../edge/src/config/check.js";
import { gpuUrlProblem } from "../../edge/src/gpu/model-routes.js";
import { edgeWith, newTenant } from "./edge-client.js";

describe("GPU service URLs", () => {
  it("takes https anywhere and http only to loopback hosts", () => {
    const allowed = [
      "https://10.0.0.1:50651",
      "https://gpu.example.com",
      "http://127.0.0.1:50651",
      "http://127.8.9.10:1",
      "http://localhost:50651",
      "http://gpu.localhost:50651",
      "http://[::1]:50651",
    ];
    const refused = [
      "http://10.0.0.1:50651",
      "http://gpu.example.com",
      "http://0.0.0.0:50651",
      "http://128.0.0.1:50651",
      "http://localhost.example.com:50651",
      "http://[::ffff:7f00:1]:50651",
      "ftp://127.0.0.1/",
      "127.0.0.1:50651",
      "",
    ];
    let checked = 0;
    for (const url of allowed) {
      expect(gpuUrlProblem(url, "u"), url).toBeUndefined();
      checked++;
    }
    for (const url of refused) {
      expect(gpuUrlProblem(url, "u"), url).toEqual(expect.any(String));
      checked++;
    }
    expect(checked).toBe(allowed.length + refused.length);
  });

  it("names each problem of a configuration", () => {
    expect(configProblems(env)).toEqual([]);
    const bad = configProblems({
      ...env,
      MODEL_ROUTES: JSON.stringify({ a: ["http://10.0.0.1:1"], b: [], c: "https://x" }),
      GPU_SERVICE_URL: "http://192.168.1.5:50651",
      GPU_DEADLINE_MS: "soon",
      MAX_IMAGE_BYTES: "-1",
    });
    expect(bad).toEqual([
      expect.stringMatching(/^MAX_IMAGE_BYTES must be a whole number/),
      expect.stringMatching(/^GPU_DEADLINE_MS must be a whole number/),
      expect.stringMatching(/^MODEL_ROUTES\["a"\]\[0\] is plain http to a non-loopback host \(10\.0\.0\.1:1\)/),
      'MODEL_ROUTES["b"] must be a non-empty list of GPU service URLs',
      'MODEL_ROUTES["c"] must be a non-empty list of GPU service URLs',
      expect.stringMatching(/^GPU_SERVICE_URL is plain http to a non-loopback host/),
    ]);
    expect(configProblems({ ...env, SHARD_COOLDOWN_MS: "20000", SHARD_MAX_COOLDOWN_MS: "5000" })).toEqual([
      "SHARD_MAX_COOLDOWN_MS (5000) must not be below SHARD_COOLDOWN_MS (20000)",
    ]);
    // a longer cool-down alone raises the longest one with it
    expect(configProblems({ ...env, SHARD_COOLDOWN_MS: "120000" })).toEqual([]);
    expect(configProblems({ ...env, MODEL_ROUTES: "{not json" })).toEqual([
      expect.stringMatching(/^MODEL_ROUTES is not JSON/),
    ]);
  });
});

describe("an edge configured unsafely", () => {
  const unsafe = { MODEL_ROUTES: JSON.stringify({ demo: ["http://10.20.30.40:50651"] }) };

  it("refuses every request but /healthz with a 500 that does not say where the GPU services are", async () => {
    const t = await newTenant();
    const paths = ["/v1/models", "/v1/chat/completions", "/admin/tenants"];
    let refused = 0;
    for (const path of paths) {
      const res = await edgeWith(unsafe, path, {
        method: path === "/v1/models" ? "GET" : "POST",
        headers: { authorization: `Bearer ${t.key}` },
        body: path === "/v1/models" ? undefined : "{}",
      });
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).not.toContain("10.20.30.40");
      expect(JSON.parse(text)).toMatchObject({
        error: {
          code: "edge_misconfigured",
          message: expect.stringContaining(`request id ${res.headers.get("x-request-id")}`),
        },
      });
      refused++;
    }
    expect(refused).toBe(paths.length);
  });

  it("refuses malformed numeric settings the same way", async () => {
    const t = await newTenant();
    const res = await edgeWith({ GPU_STALL_TIMEOUT_MS: "30s" }, "/v1/models", {
      headers: { authorization: `Bearer ${t.key}` },
    });
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ error: { code: "edge_misconfigured" } });
  });
});

describe("the dev tenant", () => {
  const models = (vars: Record<string, unknown>, key: string) =>
    edgeWith(vars, "/v1/models", { headers: { authorization: `Bearer ${key}` } });

  it("is seeded in local development, and its key works", async () => {
    const key = newApiKey();
    const res = await models({ DEV_API_KEY: key, ENVIRONMENT: "development" }, key);
    expect(res.status).toBe(200);
  });

  it("is not seeded unless ENVIRONMENT is development", async () => {
    let checked = 0;
    for (const environment of [undefined, "", "production", "Development"]) {
      const key = newApiKey();
      const res = await models({ DEV_API_KEY: key, ENVIRONMENT: environment }, key);
      expect(res.status, String(environment)).toBe(401);
      checked++;
    }
    expect(checked).toBe(4);
  });

  it("is not seeded into a D1 that is not the local emulation", async () => {
    // the hosted D1 says which of its servers ran a query; the local emulation says "miniflare.db"
    const hosted = new Proxy(env.DB, {
      get(target, prop) {
        if (prop === "prepare")
          return (sql: string) => {
            const stmt = target.prepare(sql);
            return new Proxy(stmt, {
              get(s, p) {
                if (p === "run")
                  return async () => {
                    const r = await s.run();
                    return { ...r, meta: { ...r.meta, served_by: "v3-prod" } };
                  };
                const v = Reflect.get(s, p);
                return typeof v === "function" ? v.bind(s) : v;
              },
            });
          };
        const v = Reflect.get(target, prop);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const key = newApiKey();
    expect((await models({ DEV_API_KEY: key, ENVIRONMENT: "development", DB: hosted }, key)).status).toBe(401);
    // a key with the local database: seeded
    const local = newApiKey();
    expect((await models({ DEV_API_KEY: local, ENVIRONMENT: "development" }, local)).status).toBe(200);
  });

  it("ignores a malformed DEV_API_KEY instead of failing every request", async () => {
    const t = await newTenant();
    const res = await models({ DEV_API_KEY: "sk-twig-short", ENVIRONMENT: "development" }, t.key);
    expect(res.status).toBe(200);
    expect((await models({ DEV_API_KEY: "sk-twig-short", ENVIRONMENT: "development" }, "sk-twig-short")).status).toBe(
      401,
    );
  });
});
