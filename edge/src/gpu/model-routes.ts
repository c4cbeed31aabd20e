/**
 * Which GPU services serve which model: MODEL_ROUTES is a JSON object from
 * model name to a list of base URLs, e.g.
 *   {"demo": ["https://10.0.0.1:50651", "https://10.0.0.2:50651"], "llava-1.5-7b": ["https://10.0.1.1:50651"]}
 * Unset, the edge routes the model "demo" to GPU_SERVICE_URL.
 *
 * A GPU service is reached over https; plain http only to a loopback host
 * (local development), since prompts, images and the service token would
 * otherwise cross the network in clear.
 */
import type { Env } from "../env.js";

export type ModelRoutes = ReadonlyMap<string, readonly string[]>;

/** True for localhost names and the loopback addresses 127.0.0.0/8 and ::1. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Why `url` may not be a GPU service's base URL, or undefined when it may. */
export function gpuUrlProblem(url: unknown, where: string): string | undefined {
  if (typeof url !== "string") return `${where} must be a URL string`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${where} is not a URL: ${JSON.stringify(url)}`;
  }
  if (parsed.protocol === "https:") return undefined;
  if (parsed.protocol !== "http:") return `${where} must be an https:// URL; got ${JSON.stringify(url)}`;
  if (isLoopbackHost(parsed.hostname)) return undefined;
  return `${where} is plain http to a non-loopback host (${parsed.host}): use https:// (http:// is allowed only to localhost and 127.0.0.1 for local development)`;
}

interface Parsed {
  routes: ModelRoutes;
  problems: string[];
}

const cache = new Map<string, Parsed>();

/** MODEL_ROUTES (or its default) parsed and checked; `problems` is empty when every route may be used. */
export function parseModelRoutes(env: Env): Parsed {
  const raw = env.MODEL_ROUTES || JSON.stringify({ demo: [env.GPU_SERVICE_URL] });
  let parsed = cache.get(raw);
  if (parsed) return parsed;
  const map = new Map<string, string[]>();
  const problems: string[] = [];
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    json = undefined;
    problems.push(`MODEL_ROUTES is not JSON: ${(err as Error).message}`);
  }
  if (problems.length === 0 && (!json || typeof json !== "object" || Array.isArray(json)))
    problems.push("MODEL_ROUTES must be a JSON object of model name -> list of GPU service URLs");
  else if (json && typeof json === "object") {
    for (const [model, urls] of Object.entries(json)) {
      if (!Array.isArray(urls) || urls.length === 0) {
        problems.push(`MODEL_ROUTES["${model}"] must be a non-empty list of GPU service URLs`);
        continue;
      }
      const bad = urls.map((u, i) => gpuUrlProblem(u, `MODEL_ROUTES["${model}"][${i}]`)).filter((p) => p);
      problems.push(...(bad as string[]));
      if (bad.length === 0) map.set(model, urls as string[]);
    }
  }
  parsed = { routes: map, problems };
  cache.set(raw, parsed);
  return parsed;
}

/** The usable routes (checkConfig has refused the request already if any route is bad). */
export const modelRoutes = (env: Env): ModelRoutes => parseModelRoutes(env).routes;
