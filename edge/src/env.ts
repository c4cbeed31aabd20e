/** Bindings, variables and secrets the edge Worker receives (see wrangler.jsonc and the README). */
export interface Env {
  /** Base URL of the GPU service probed by /healthz (Connect protocol), e.g. http://127.0.0.1:50651 */
  GPU_SERVICE_URL: string;
  /** JSON object: model name -> GPU service base URLs serving it, e.g. {"demo":["https://10.0.0.1:50651"]} */
  MODEL_ROUTES?: string;
  /** Secret: bearer token the edge presents to the GPU service (its TWIG_SERVICE_TOKEN). */
  GPU_SERVICE_TOKEN?: string;
  /** Secret: bearer token of the admin API (and of /healthz's details); the admin API is off while it is unset. */
  ADMIN_TOKEN?: string;
  /** `development` only in local configuration (the generated .dev.vars): allows the dev seed. */
  ENVIRONMENT?: string;
  /** Local development only (.dev.vars): seeds the "dev" tenant with this API key. */
  DEV_API_KEY?: string;
  /** Numeric settings (see config/settings.ts): sizes, GPU call timeouts, storage quota and expiry. */
  MAX_IMAGE_BYTES?: string;
  MAX_VIDEO_BYTES?: string;
  MAX_VIDEO_FRAMES?: string;
  MAX_REQUEST_BYTES?: string;
  GPU_DEADLINE_MS?: string;
  GPU_CONNECT_TIMEOUT_MS?: string;
  GPU_STALL_TIMEOUT_MS?: string;
  SHARD_COOLDOWN_MS?: string;
  SHARD_MAX_COOLDOWN_MS?: string;
  ROUTES_CACHE_MS?: string;
  STORAGE_QUOTA_BYTES?: string;
  STORAGE_QUOTA_FILES?: string;
  FILE_TTL_SECONDS?: string;
  /** Tenants, API key hashes, and the shard lists set through the admin API (model_routes). */
  DB: D1Database;
  /** Uploaded images, keyed tenants/<tenant>/<sha256>. */
  FILES: R2Bucket;
  /** One TenantLimiter Durable Object per tenant. */
  LIMITER: DurableObjectNamespace<import("./limits/limiter.js").TenantLimiter>;
}
