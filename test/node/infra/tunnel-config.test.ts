/**
 * The single-host Cloudflare Tunnel configuration (infra/cloudflared/config.yml):
 * cloudflared's rules hold (every rule but the last has a hostname, the last is
 * the catch-all), it forwards only to the GPU service's port on this host, never
 * publishes the metrics port, and carries no credential.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { repoRoot } from "../../support/gpu-service.js";

const text = readFileSync(join(repoRoot, "infra/cloudflared/config.yml"), "utf8");
const config = parse(text);

describe("infra/cloudflared/config.yml", () => {
  it("routes its hostname to the GPU service on loopback and ends with the catch-all", () => {
    expect(config.tunnel).toMatch(/^[0-9a-f-]{36}$/);
    expect(config["credentials-file"]).toMatch(/^\/etc\/cloudflared\/.+\.json$/);
    const rules: { hostname?: string; service: string }[] = config.ingress;
    expect(rules.at(-1)).toEqual({ service: "http_status:404" });
    let checked = 0;
    for (const rule of rules.slice(0, -1)) {
      expect(rule.hostname).toMatch(/^[a-z0-9.-]+$/);
      expect(rule.service).toBe("http://127.0.0.1:50651");
      checked++;
    }
    expect(checked).toBeGreaterThan(0);
    expect(text.replace(/^\s*#.*$/gm, "")).not.toMatch(/9464/);
    expect(config.metrics).toMatch(/^127\.0\.0\.1:/);
  });

  it("holds no tunnel secret", () => {
    expect(text).not.toMatch(/TunnelSecret|AccountTag|"?token"?\s*:/i);
  });
});
