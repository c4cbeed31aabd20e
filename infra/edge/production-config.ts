/**
 * Checks of the edge's production Workers configuration (`env.production` in
 * edge/wrangler.jsonc), read through wrangler's own config reader so that what
 * is checked is what `wrangler deploy --env production` uploads:
 *
 * - `structuralProblems`: what must always hold (CI): the bindings the code
 *   needs, the Durable Object's SQLite migration, the secrets listed and none of
 *   them set as a plain variable, MODEL_ROUTES valid and HTTPS only.
 * - `placeholderProblems`: what must be filled in before a real deploy (the D1
 *   id, the example domain); `npm run -w @twigserve/edge deploy:production`
 *   refuses to deploy while any remain.
 */
import { fileURLToPath } from "node:url";
import { unstable_readConfig } from "wrangler";

export const WRANGLER_CONFIG = fileURLToPath(new URL("../../edge/wrangler.jsonc", import.meta.url));
/** Secrets the production edge needs (wrangler secret put NAME --env production). */
export const PRODUCTION_SECRETS = ["ADMIN_TOKEN", "GPU_SERVICE_TOKEN"];
const PLACEHOLDER_DOMAIN = /(^|\.)twigserve\.example$/;
const PLACEHOLDER_ID = /^0{8}-0{4}-0{4}-0{4}-0{12}$/;

/** The parts of wrangler's resolved configuration checked here (its own type does not resolve offline). */
export interface WorkerConfig {
  name?: string;
  workers_dev?: boolean;
  routes?: (string | { pattern: string })[];
  vars: Record<string, unknown>;
  secrets?: { required?: string[] };
  d1_databases: { binding: string; database_name?: string; database_id?: string }[];
  r2_buckets: { binding: string; bucket_name?: string }[];
  durable_objects: { bindings: { name: string; class_name: string }[] };
  migrations: { tag: string; new_sqlite_classes?: string[] }[];
}

/** The configuration wrangler deploys for `--env production`. */
export function productionConfig(path = WRANGLER_CONFIG): WorkerConfig {
  return unstable_readConfig({ config: path, env: "production" }, { hideWarnings: true }) as WorkerConfig;
}

/** MODEL_ROUTES as a map of model -> shard URLs (throws on malformed JSON). */
export function productionRoutes(config: WorkerConfig): Map<string, string[]> {
  const raw = config.vars.MODEL_ROUTES;
  if (typeof raw !== "string") throw new Error("env.production.vars.MODEL_ROUTES is not set");
  return new Map(Object.entries(JSON.parse(raw) as Record<string, string[]>));
}

/** What is wrong with the production configuration whatever the deployment. */
export function structuralProblems(config: WorkerConfig): string[] {
  const problems: string[] = [];
  const need = (ok: boolean, what: string) => ok || problems.push(what);
  need(
    config.d1_databases.some((d) => d.binding === "DB"),
    "D1 binding DB is missing",
  );
  need(
    config.r2_buckets.some((b) => b.binding === "FILES"),
    "R2 binding FILES is missing",
  );
  need(
    config.durable_objects.bindings.some((b) => b.name === "LIMITER" && b.class_name === "TenantLimiter"),
    "Durable Object binding LIMITER (TenantLimiter) is missing",
  );
  need(
    config.migrations.some((m) => m.new_sqlite_classes?.includes("TenantLimiter")),
    "no migration creates TenantLimiter as a SQLite-backed class",
  );
  for (const name of PRODUCTION_SECRETS) {
    need(config.secrets?.required?.includes(name) ?? false, `secret ${name} is not listed in secrets.required`);
    need(!(name in config.vars), `${name} is a plain variable: it must be a secret`);
  }
  need(!("DEV_API_KEY" in config.vars), "DEV_API_KEY (local development only) is set");
  need(config.routes !== undefined && config.routes.length > 0, "no route");
  need(config.workers_dev === false, "workers_dev is on: the API would also answer on *.workers.dev");
  let routes = new Map<string, string[]>();
  try {
    routes = productionRoutes(config);
  } catch (err) {
    problems.push(`MODEL_ROUTES: ${(err as Error).message}`);
  }
  need(routes.size > 0, "MODEL_ROUTES names no model");
  for (const [model, urls] of routes) {
    need(Array.isArray(urls) && urls.length > 0, `MODEL_ROUTES["${model}"] lists no shard`);
    for (const url of urls ?? [])
      need(/^https:\/\/[^/]+\/?$/.test(url), `MODEL_ROUTES["${model}"]: ${url} is not an https:// base URL`);
  }
  const probe = config.vars.GPU_SERVICE_URL;
  need(typeof probe === "string" && probe.startsWith("https://"), "GPU_SERVICE_URL is not https://");
  return problems;
}

/** Example values still in place: a real deploy must replace every one. */
export function placeholderProblems(config: WorkerConfig): string[] {
  const problems: string[] = [];
  for (const d of config.d1_databases)
    if (PLACEHOLDER_ID.test(d.database_id ?? ""))
      problems.push(`D1 ${d.binding}: database_id is the placeholder (wrangler d1 create ${d.database_name})`);
  for (const r of config.routes ?? []) {
    const pattern = typeof r === "string" ? r : r.pattern;
    if (PLACEHOLDER_DOMAIN.test(pattern.split("/")[0])) problems.push(`route ${pattern} is the example domain`);
  }
  for (const [model, urls] of productionRoutes(config))
    for (const url of urls)
      if (PLACEHOLDER_DOMAIN.test(new URL(url).hostname))
        problems.push(`MODEL_ROUTES["${model}"]: ${url} is the example domain`);
  return problems;
}
