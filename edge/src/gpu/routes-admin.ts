/**
 * The admin API for the shard lists (guarded like the rest of /admin by
 * `Authorization: Bearer <ADMIN_TOKEN>`); a change is stored in D1 and
 * routes requests without a redeploy (route-table.ts):
 *
 *   GET    /admin/routes          -> {routes: {<model>: {source, urls, shards}}, withdrawn: [...]}
 *                                    shards: each URL's breaker and counts as this isolate sees them
 *   PUT    /admin/routes/:model   {urls: [...]} -> the model's new list (replaces MODEL_ROUTES's;
 *                                    [] withdraws the model)
 *   DELETE /admin/routes/:model   -> the model is routed by MODEL_ROUTES again
 *
 * @example
 *   curl -X PUT -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
 *     -d '{"urls":["https://gpu-demo-1.example.com","https://gpu-demo-2.example.com"]}' \
 *     https://api.example.com/admin/routes/demo
 */
import { Hono } from "hono";
import type { AppEnv } from "../app-types.js";
import { jsonObject, requireAdmin } from "../auth/admin.js";
import { ApiError, invalidParam } from "../http/errors.js";
import { gpuUrlProblem, modelRoutes } from "./model-routes.js";
import { deleteOverride, mergeRoutes, putOverride, readOverrides } from "./route-table.js";
import { shardPool } from "./shard-pool.js";

/** The most shards one model may list. */
export const MAX_SHARDS = 64;

/** The model named in the path, checked like a request's `model`. */
function modelParam(raw: string): string {
  if (raw === "" || raw.length > 256) throw invalidParam("model", "the model name must have 1 to 256 characters");
  return raw;
}

/** The body's `urls`: a list of distinct GPU service base URLs (https, or http to loopback). */
function urlsOf(body: Record<string, unknown>): string[] {
  const urls = body.urls;
  if (!Array.isArray(urls) || urls.length > MAX_SHARDS)
    throw invalidParam(
      "urls",
      `urls must be a list of at most ${MAX_SHARDS} GPU service base URLs ([] withdraws the model)`,
    );
  for (const [i, u] of urls.entries()) {
    const problem = gpuUrlProblem(u, `urls[${i}]`);
    if (problem) throw invalidParam("urls", problem);
  }
  const normalized = (urls as string[]).map((u) => u.replace(/\/+$/, ""));
  if (new Set(normalized).size !== normalized.length) throw invalidParam("urls", "urls lists a GPU service twice");
  return normalized;
}

export const routesAdmin = new Hono<AppEnv>();
routesAdmin.use("*", requireAdmin());

routesAdmin.get("/", async (c) => {
  const base = modelRoutes(c.env);
  const overrides = await readOverrides(c.env.DB);
  const merged = mergeRoutes(base, overrides);
  const routes = Object.fromEntries(
    [...merged].map(([model, urls]) => [
      model,
      { source: overrides.has(model) ? "admin" : "MODEL_ROUTES", urls, shards: shardPool.view(urls) },
    ]),
  );
  const withdrawn = [...overrides].filter(([, urls]) => urls.length === 0).map(([model]) => model);
  return c.json({ routes, withdrawn });
});

routesAdmin.put("/:model", async (c) => {
  const model = modelParam(c.req.param("model"));
  const urls = urlsOf(await jsonObject(c.req.raw));
  await putOverride(c.env.DB, model, urls);
  console.log(`TwigServe edge: shard list of ${model} set through the admin API: ${JSON.stringify(urls)}`);
  return c.json({ model, source: "admin", urls });
});

routesAdmin.delete("/:model", async (c) => {
  const model = modelParam(c.req.param("model"));
  if (!(await deleteOverride(c.env.DB, model)))
    throw new ApiError(404, `the model ${model} has no shard list set through the admin API`, "route_not_found");
  const urls = modelRoutes(c.env).get(model) ?? [];
  console.log(`TwigServe edge: shard list of ${model} removed through the admin API; MODEL_ROUTES applies`);
  return c.json({ model, source: "MODEL_ROUTES", urls });
});
