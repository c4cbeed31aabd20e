/**
 * The shard lists the edge routes by, reloadable without a redeploy:
 * MODEL_ROUTES (a Worker variable, changed by deploying) is the base, and the
 * rows of D1's `model_routes` table (set through the admin API, admin-routes.ts)
 * replace its list for their model; a row with an empty list withdraws the
 * model. Each isolate keeps what it read for ROUTES_CACHE_MS, so a change
 * reaches every isolate within that time (the isolate that made it at once).
 * When D1 cannot be read, the isolate keeps the lists it read last (or
 * MODEL_ROUTES alone) and says so in the log.
 *
 * @example
 *   const routes = await currentRoutes(env, settingsOf(env).routesCacheMs);
 *   routes.get("demo"); // ["https://gpu-demo-1.example.com", "https://gpu-demo-2.example.com"]
 */
import type { Env } from "../env.js";
import { type ModelRoutes, modelRoutes } from "./model-routes.js";

/** Model name -> its shard list as set through the admin API ([] withdraws the model). */
export type RouteOverrides = ReadonlyMap<string, readonly string[]>;

interface Cached {
  overrides: RouteOverrides;
  readAt: number;
}

let cached: Cached | undefined;
let reading: Promise<RouteOverrides> | undefined;
/** Bumped by every change: a read that started before it is not kept. */
let generation = 0;

/** Every row of `model_routes`. */
export async function readOverrides(db: D1Database): Promise<RouteOverrides> {
  const { results } = await db
    .prepare("SELECT model, urls FROM model_routes ORDER BY model")
    .all<{ model: string; urls: string }>();
  return new Map(results.map((r) => [r.model, JSON.parse(r.urls) as string[]]));
}

/** Sets a model's shard list (checked by the caller); [] withdraws the model. */
export async function putOverride(db: D1Database, model: string, urls: readonly string[]): Promise<void> {
  await db
    .prepare(
      "INSERT INTO model_routes (model, urls, updated_at) VALUES (?1, ?2, ?3) " +
        "ON CONFLICT (model) DO UPDATE SET urls = excluded.urls, updated_at = excluded.updated_at",
    )
    .bind(model, JSON.stringify(urls), Date.now())
    .run();
  forgetRoutes();
}

/** Removes a model's row (MODEL_ROUTES applies to it again); false when it had none. */
export async function deleteOverride(db: D1Database, model: string): Promise<boolean> {
  const res = await db.prepare("DELETE FROM model_routes WHERE model = ?1").bind(model).run();
  forgetRoutes();
  return res.meta.changes > 0;
}

/** MODEL_ROUTES with `overrides` laid over it. */
export function mergeRoutes(base: ModelRoutes, overrides: RouteOverrides): ModelRoutes {
  const merged = new Map(base);
  for (const [model, urls] of overrides)
    if (urls.length === 0) merged.delete(model);
    else merged.set(model, urls);
  return merged;
}

/** The overrides, from this isolate's copy when it is younger than `maxAgeMs`. */
async function overridesOf(env: Env, maxAgeMs: number): Promise<RouteOverrides> {
  const now = Date.now();
  if (cached && now - cached.readAt < maxAgeMs) return cached.overrides;
  const started = generation;
  reading ??= readOverrides(env.DB)
    .catch((err: unknown) => {
      console.error(
        `TwigServe edge: cannot read the shard lists from D1 (${(err as Error).message}); using the ones read last`,
      );
      return cached?.overrides ?? new Map<string, string[]>();
    })
    .then((overrides) => {
      if (started === generation) cached = { overrides, readAt: Date.now() };
      return overrides;
    })
    .finally(() => {
      if (started === generation) reading = undefined;
    });
  return reading;
}

/** The routes in force: MODEL_ROUTES with the admin API's lists over it (read at most every `maxAgeMs`). */
export async function currentRoutes(env: Env, maxAgeMs: number): Promise<ModelRoutes> {
  return mergeRoutes(modelRoutes(env), await overridesOf(env, maxAgeMs));
}

/** Drops this isolate's copy of the overrides: the next request reads them again. */
export function forgetRoutes(): void {
  generation++;
  cached = undefined;
  reading = undefined;
}
