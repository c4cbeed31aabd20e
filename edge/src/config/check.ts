/**
 * The edge refuses to serve with a configuration that is unsafe or malformed:
 * a GPU route over plain http to a non-loopback host, MODEL_ROUTES that is not
 * a table of URLs, a numeric setting that is not a number. The problems are
 * written to the log once per isolate (at startup, and again with the first
 * request that meets them); every request but /healthz gets a 500 that says the
 * edge is misconfigured, without the details.
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../app-types.js";
import type { Env } from "../env.js";
import { gpuUrlProblem, parseModelRoutes } from "../gpu/model-routes.js";
import { ApiError } from "../http/errors.js";
import { readSettings } from "./settings.js";

/** Everything wrong with the configuration in `env`; empty when the edge may serve. */
export function configProblems(env: Env): string[] {
  const { settings, problems: settingProblems } = readSettings(env);
  const problems = [...settingProblems, ...parseModelRoutes(env).problems];
  if (settings.shardMaxCooldownMs < settings.shardCooldownMs)
    problems.push(
      `SHARD_MAX_COOLDOWN_MS (${settings.shardMaxCooldownMs}) must not be below SHARD_COOLDOWN_MS (${settings.shardCooldownMs})`,
    );
  if (env.GPU_SERVICE_URL) {
    const p = gpuUrlProblem(env.GPU_SERVICE_URL, "GPU_SERVICE_URL");
    if (p) problems.push(p);
  }
  return problems;
}

const reported = new Set<string>();

/** Logs the problems of `env` (once per distinct set per isolate); returns them. */
export function reportConfigProblems(env: Env): string[] {
  const problems = configProblems(env);
  const key = problems.join("\n");
  if (problems.length > 0 && !reported.has(key)) {
    reported.add(key);
    console.error(
      `TwigServe edge: refusing to serve, the configuration is unsafe or malformed:\n  ${problems.join("\n  ")}`,
    );
  }
  return problems;
}

/** Answers 500 `edge_misconfigured` while the configuration has problems. */
export function refuseIfMisconfigured(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (reportConfigProblems(c.env).length > 0)
      throw new ApiError(
        500,
        "the edge is misconfigured and refuses to serve; its operator finds the reason in its log",
        "edge_misconfigured",
      );
    await next();
  };
}
