/** The Hono environment shared by every route: bindings and per-request variables. */
import type { Tenant } from "./auth/store.js";
import type { Env } from "./env.js";

export interface AppEnv {
  Bindings: Env;
  Variables: { requestId: string; tenant: Tenant };
}
