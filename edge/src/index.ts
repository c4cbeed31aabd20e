/**
 * The TwigServe edge: a Hono app on Cloudflare Workers in front of the GPU
 * service. Public API under /v1 (API key auth, per-tenant limits), the admin
 * API under /admin (admin token), /healthz open. The playground page is
 * static assets (edge/public/playground/, served before the app) and asks
 * /playground/config for the local dev key.
 */
import { Hono } from "hono";
import type { AppEnv } from "./app-types.js";
import { adminRoutes } from "./auth/admin.js";
import { requireApiKey } from "./auth/api-key.js";
import { chatRoutes } from "./chat/routes.js";
import { fileRoutes } from "./files/routes.js";
import { ApiError, errorResponse } from "./http/errors.js";
import { requestId } from "./http/request-id.js";
import { playgroundConfig } from "./playground/config.js";
import { healthz } from "./routes/healthz.js";
import { modelsApi } from "./routes/models.js";

export { TenantLimiter } from "./limits/limiter.js";

const app = new Hono<AppEnv>();

app.use("*", requestId());
app.get("/healthz", healthz);
app.get("/playground/config", playgroundConfig);
app.route("/admin", adminRoutes);
app.use("/v1/*", requireApiKey());
app.route("/v1/chat", chatRoutes);
app.route("/v1/files", fileRoutes);
app.route("/v1/models", modelsApi);

app.notFound((c) =>
  errorResponse(c, new ApiError(404, `no route for ${c.req.method} ${new URL(c.req.url).pathname}`, "not_found")),
);
app.onError((err, c) => errorResponse(c, err));

export default app;
