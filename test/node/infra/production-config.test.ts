/**
 * The edge's production Workers configuration (env.production in
 * edge/wrangler.jsonc), as wrangler resolves it: the bindings, the Durable
 * Object migration and the secrets are there, no secret is a plain variable,
 * the shards are HTTPS and are the hostnames the Kubernetes settings serve, and
 * the deploy guard refuses the example values until they are replaced.
 * (`.ci/run` also bundles it: wrangler deploy --dry-run --env production.)
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  PRODUCTION_SECRETS,
  placeholderProblems,
  productionConfig,
  productionRoutes,
  structuralProblems,
  type WorkerConfig,
  WRANGLER_CONFIG,
} from "../../../infra/edge/production-config.js";
import { settings } from "../../../infra/k8s/settings.js";

const config = productionConfig();

/** The production configuration with real values in place of the examples. */
function filledIn(): WorkerConfig {
  const routes = Object.fromEntries(
    [...productionRoutes(config)].map(([m, urls]) => [m, urls.map((u) => u.replace("twigserve.example", "acme.com"))]),
  );
  return {
    ...config,
    routes: [{ pattern: "api.acme.com" }],
    d1_databases: config.d1_databases.map((d) => ({ ...d, database_id: "3f1c2b7e-5a4d-4c8e-9b61-2d7f0a9e8c15" })),
    vars: { ...config.vars, MODEL_ROUTES: JSON.stringify(routes) },
  };
}

describe("edge/wrangler.jsonc env.production", () => {
  it("has the bindings, the Durable Object migration, the secrets listed and HTTPS shards", () => {
    expect(structuralProblems(config)).toEqual([]);
    expect(config.secrets?.required).toEqual(PRODUCTION_SECRETS);
    expect(config.workers_dev).toBe(false);
  });

  it("names each problem of a broken configuration (the check can fail)", () => {
    const broken: WorkerConfig = {
      ...config,
      workers_dev: true,
      vars: {
        ...config.vars,
        ADMIN_TOKEN: "oops",
        DEV_API_KEY: "sk-twig-x",
        MODEL_ROUTES: JSON.stringify({ demo: ["http://10.0.0.1:50651"], other: [] }),
      },
      migrations: [],
      durable_objects: { bindings: [] },
    };
    const problems = structuralProblems(broken);
    for (const what of [
      /workers_dev/,
      /ADMIN_TOKEN is a plain variable/,
      /DEV_API_KEY/,
      /http:\/\/10\.0\.0\.1:50651 is not an https/,
      /"other"\] lists no shard/,
      /no migration creates TenantLimiter/,
      /LIMITER/,
    ])
      expect(
        problems.some((p) => what.test(p)),
        String(what),
      ).toBe(true);
    expect(problems).toHaveLength(7);
  });

  it("routes every Kubernetes model to its public hostname over HTTPS", () => {
    const routes = productionRoutes(config);
    let checked = 0;
    for (const m of settings.models) {
      expect(routes.get(m.name), m.name).toContain(`https://${m.hostname}`);
      checked++;
    }
    expect(checked).toBe(settings.models.length);
    expect([...routes.keys()].sort()).toEqual(settings.models.map((m) => m.name).sort());
  });

  it("is refused for deployment while the example values remain, and accepted once they are replaced", () => {
    const placeholders = placeholderProblems(config);
    expect(placeholders.some((p) => p.startsWith("D1 DB: database_id is the placeholder"))).toBe(true);
    expect(placeholders.some((p) => p.startsWith("route api.twigserve.example"))).toBe(true);
    expect(placeholders.filter((p) => p.startsWith("MODEL_ROUTES"))).toHaveLength(settings.models.length);
    expect(placeholderProblems(filledIn())).toEqual([]);
    expect(structuralProblems(filledIn())).toEqual([]);
  });

  it("commits no secret value", () => {
    const text = readFileSync(WRANGLER_CONFIG, "utf8");
    for (const name of [...PRODUCTION_SECRETS, "DEV_API_KEY"]) expect(text).not.toMatch(new RegExp(`"${name}"\\s*:`));
    expect(text).not.toMatch(/sk-twig-[A-Za-z0-9_-]{20,}/);
  });
});
