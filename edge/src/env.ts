/** Bindings, variables and secrets the edge Worker receives (see wrangler.jsonc and the README). */
export interface Env {
  /** Base URL of the GPU service probed by /healthz (Connect protocol), e.g. http://127.0.0.1:50651 */
  GPU_SERVICE_URL: string;
  /** JSON object: model name -> GPU service base URLs serving it, e.g. {"demo":["http://10.0.0.1:50651"]} */
  MODEL_ROUTES?: string;
  /** Secret: bearer token the edge presents to the GPU service (its TWIG_SERVICE_TOKEN). */
  GPU_SERVICE_TOKEN?: string;
  /** Secret: bearer token of the admin API; the admin API is off while it is unset. */
  ADMIN_TOKEN?: string;
  /** Local development only (.dev.vars): seeds the "dev" tenant with this API key. */
  DEV_API_KEY?: string;
  /** Largest accepted image in bytes (uploads and data: URLs); default 10 MiB. */
  MAX_IMAGE_BYTES?: string;
  /** Tenants, API key hashes. */
  DB: D1Database;
  /** Uploaded images, keyed tenants/<tenant>/<sha256>. */
  FILES: R2Bucket;
  /** One TenantLimiter Durable Object per tenant. */
  LIMITER: DurableObjectNamespace<import("./limits/limiter.js").TenantLimiter>;
}
