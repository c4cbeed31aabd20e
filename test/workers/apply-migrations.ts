// Creates the edge's D1 tables (edge/migrations) before each Workers test file; applying them twice is a no-op.
import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
