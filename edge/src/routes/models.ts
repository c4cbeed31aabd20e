/**
 * GET /v1/models: the routed models this API key may use (MODEL_ROUTES and the
 * admin API's shard lists), in OpenAI's list shape.
 * GET /v1/models/{id} adds what the GPU service says of the model under `twigvlm`.
 */
import { Hono } from "hono";
import type { AppEnv } from "../app-types.js";
import { settingsOf } from "../config/settings.js";
import { modelInfo, twigModel } from "../gpu/model-info.js";
import { currentRoutes } from "../gpu/route-table.js";
import { ApiError } from "../http/errors.js";

export const modelsApi = new Hono<AppEnv>();

const visible = (allowed: string[], name: string) => allowed.length === 0 || allowed.includes(name);

const routesOf = (env: AppEnv["Bindings"]) => currentRoutes(env, settingsOf(env).routesCacheMs);

modelsApi.get("/", async (c) => {
  const allowed = c.get("tenant").models;
  const data = [...(await routesOf(c.env)).keys()]
    .filter((m) => visible(allowed, m))
    .map((id) => ({ id, object: "model", created: 0, owned_by: "twigserve" }));
  return c.json({ object: "list", data });
});

modelsApi.get("/:id", async (c) => {
  const id = c.req.param("id");
  const urls = (await routesOf(c.env)).get(id);
  if (!urls || !visible(c.get("tenant").models, id))
    throw new ApiError(404, `the model ${id} does not exist`, "model_not_found");
  const info = await modelInfo(id, urls, c.env.GPU_SERVICE_TOKEN);
  return c.json({
    id,
    object: "model",
    created: 0,
    owned_by: "twigserve",
    ...(info ? { twigvlm: twigModel(info) } : {}),
  });
});
