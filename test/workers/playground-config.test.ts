/**
 * GET /playground/config hands the page the dev key only when the edge runs
 * locally: DEV_API_KEY and ENVIRONMENT=development set (wrangler dev's
 * generated .dev.vars) and the request on a loopback address. A deployed edge
 * (any other host, or without ENVIRONMENT=development) never shows a key.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import app from "../../edge/src/index.js";

/** Every mode of the API but base (the page's second pane), in the proto's order. */
const MODES = ["twig", "fastv", "random", "ssd-only", "ttp-only", "visionzip"];
const KEY = "sk-twig-dev_local_key_00000000000000000000000000000";

const config = async (url: string, devKey: string | undefined, environment = "development") => {
  const res = await app.request(url, {}, { ...env, DEV_API_KEY: devKey, ENVIRONMENT: environment });
  expect(res.status).toBe(200);
  expect(res.headers.get("cache-control")).toBe("no-store");
  return res.json();
};

describe("GET /playground/config", () => {
  it("gives the dev key to a page loaded from a loopback address of a local edge", async () => {
    expect(await config("http://127.0.0.1:8787/playground/config", KEY)).toEqual({ dev_api_key: KEY, modes: MODES });
    expect(await config("http://localhost:8787/playground/config", KEY)).toEqual({ dev_api_key: KEY, modes: MODES });
  });

  it("gives no key on any other host, or when no dev key is set", async () => {
    expect(await config("https://api.example.com/playground/config", KEY)).toEqual({ dev_api_key: null, modes: MODES });
    expect(await config("http://127.0.0.1.example.com/playground/config", KEY)).toEqual({
      dev_api_key: null,
      modes: MODES,
    });
    expect(await config("http://127.0.0.1:8787/playground/config", undefined)).toEqual({
      dev_api_key: null,
      modes: MODES,
    });
    expect(await config("http://127.0.0.1:8787/playground/config", "")).toEqual({ dev_api_key: null, modes: MODES });
    expect(await config("http://127.0.0.1:8787/playground/config", KEY, "production")).toEqual({
      dev_api_key: null,
      modes: MODES,
    });
  });
});
