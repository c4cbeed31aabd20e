/**
 * Which GPU services serve which model: MODEL_ROUTES is a JSON object from
 * model name to a list of base URLs, e.g.
 *   {"demo": ["http://10.0.0.1:50651", "http://10.0.0.2:50651"], "llava-1.5-7b": ["http://10.0.1.1:50651"]}
 * Unset, the edge routes the model "demo" to GPU_SERVICE_URL.
 */
import type { Env } from "../env.js";

export type ModelRoutes = ReadonlyMap<string, readonly string[]>;

const cache = new Map<string, ModelRoutes>();

export function modelRoutes(env: Env): ModelRoutes {
  const raw = env.MODEL_ROUTES || JSON.stringify({ demo: [env.GPU_SERVICE_URL] });
  let routes = cache.get(raw);
  if (!routes) {
    const parsed: unknown = JSON.parse(raw);
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed))
      throw new Error("MODEL_ROUTES must be a JSON object of model name -> list of URLs");
    const map = new Map<string, string[]>();
    for (const [model, urls] of Object.entries(parsed)) {
      if (
        !Array.isArray(urls) ||
        urls.length === 0 ||
        urls.some((u) => typeof u !== "string" || !/^https?:\/\//.test(u))
      )
        throw new Error(`MODEL_ROUTES["${model}"] must be a non-empty list of http(s) URLs`);
      map.set(model, urls);
    }
    routes = map;
    cache.set(raw, routes);
  }
  return routes;
}
