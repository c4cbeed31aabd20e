/**
 * The TwigServe edge: a Hono app on Cloudflare Workers in front of the GPU
 * service. Public API under /v1 (API key auth, per-tenant limits), the admin
 * API under /admin (admin token), /healthz open (details with the admin token).
 * An unsafe or malformed configuration is reported in the log at startup and
 * refused on every request but /healthz. The playground page is static assets
 * (edge/public/playground/, served before the app) and asks /playground/config
 * for the local dev key.
 */
import { env } from "cloudflare:workers";
import { Hono } from "hono";
import type { AppEnv } from "./app-types.js";
import { adminRoutes } from "./auth/admin.js";
import { requireApiKey } from "./auth/api-key.js";
import { devKeyRefusal } from "./auth/dev-seed.js";
import { chatRoutes } from "./chat/routes.js";
import { refuseIfMisconfigured, reportConfigProblems } from "./config/check.js";
import type { Env } from "./env.js";
import { fileRoutes } from "./files/routes.js";
import { routesAdmin } from "./gpu/routes-admin.js";
import { ApiError, errorResponse } from "./http/errors.js";
import { requestId } from "./http/request-id.js";
import { playgroundConfig } from "./playground/config.js";
import { healthz } from "./routes/healthz.js";
import { modelsApi } from "./routes/models.js";

export { TenantLimiter } from "./limits/limiter.js";

// at startup, so that an operator sees a bad configuration before the first request does
reportConfigProblems(env as unknown as Env);
const devKeyProblem = devKeyRefusal(env as unknown as Env);
if (devKeyProblem) console.warn(`TwigServe: ${devKeyProblem}`);

const app = new Hono<AppEnv>();

app.use("*", requestId());
app.get("/healthz", healthz);
app.get("/playground/config", playgroundConfig);
app.use("*", refuseIfMisconfigured());
app.route("/admin/routes", routesAdmin);
app.route("/admin", adminRoutes);
app.use("/v1/*", requireApiKey());
app.route("/v1/chat", chatRoutes);
app.route("/v1/files", fileRoutes);
app.route("/v1/models", modelsApi);

app.notFound((c) =>
  errorResponse(
    c,
    new ApiError(404, `no route for ${c.req.method} ${new URL(c.req.url).pathname.slice(0, 200)}`, "not_found"),
  ),
);
app.onError((err, c) => errorResponse(c, err));

export default app;
