/**
 * GET /playground/config: what the playground page (static assets under
 * /playground/) needs before it has a key: the modes it offers (the API's
 * names, from the table generated from the proto) and the dev key. The local development key is
 * handed out only by an edge under `wrangler dev` answering on a loopback
 * address with DEV_API_KEY set and ENVIRONMENT=development (what the generated
 * edge/.dev.vars sets, and the dev seed requires too); anywhere else the page
 * asks for a key.
 */
import { MODE_NUMBER } from "@twigserve/proto/twigvlm/v1/names.js";
import type { Context } from "hono";
import type { AppEnv } from "../app-types.js";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** True when this request reached a local development edge (never a deployed one). */
export function isLocalDevRequest(c: Context<AppEnv>): boolean {
  return Boolean(c.env.DEV_API_KEY) && c.env.ENVIRONMENT === "development" && LOOPBACK.has(new URL(c.req.url).hostname);
}

/** The modes the page offers for its first pane (the second always runs `base`), from the proto's table. */
export const PLAYGROUND_MODES = Object.keys(MODE_NUMBER).filter((m) => m !== "base");

export function playgroundConfig(c: Context<AppEnv>): Response {
  c.header("cache-control", "no-store");
  return c.json({
    dev_api_key: isLocalDevRequest(c) ? (c.env.DEV_API_KEY ?? null) : null,
    modes: PLAYGROUND_MODES,
  });
}
