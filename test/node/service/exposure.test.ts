/**
 * Safe defaults through the real service process: without a service token it
 * refuses to listen beyond loopback (one line, exit 2, before it listens), and
 * with a token on 0.0.0.0 its metrics endpoint still binds 127.0.0.1 (read
 * from the kernel's table of listening sockets, /proc/net/tcp).
 */
import { readFileSync, rmSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { configOnlyModelsDir, startGpuService } from "../../support/gpu-service.js";

/** Local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on `port`. */
function listeningOn(port: number): string[] {
  const rows = readFileSync("/proc/net/tcp", "utf8").trim().split("\n").slice(1);
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  return rows
    .map((r) => r.trim().split(/\s+/))
    .filter(([, local, , state]) => state === "0A" && local.endsWith(`:${hexPort}`))
    .map(([, local]) => local.split(":")[0]);
}
const ANY = "00000000"; // 0.0.0.0
const LOOPBACK = "0100007F"; // 127.0.0.1, little-endian

const modelsDir = configOnlyModelsDir();
afterAll(() => rmSync(modelsDir, { recursive: true, force: true }));

describe("safe by default", () => {
  it("refuses to listen on 0.0.0.0 without a service token, saying why, before it listens", async () => {
    const failure = await startGpuService(0, { TWIG_GPU_HOST: "0.0.0.0", TWIG_MODELS_DIR: modelsDir }).then(
      async (s) => {
        await s.stop();
        return "started";
      },
      (e) => (e as Error).message,
    );
    expect(failure).toMatch(/^GPU service exited with 2:/);
    expect(failure).toContain(
      "gpu-service: TWIG_GPU_HOST=0.0.0.0 is not a loopback address and TWIG_SERVICE_TOKEN is not set",
    );
    expect(failure).toContain("TWIG_ALLOW_UNAUTHENTICATED=1 on a trusted network");
    expect(failure).not.toContain("listening on");
  });

  it("listens on 0.0.0.0 with a token, and keeps /metrics on 127.0.0.1", async () => {
    const service = await startGpuService(0, {
      TWIG_GPU_HOST: "0.0.0.0",
      TWIG_SERVICE_TOKEN: "exposure-test",
      TWIG_MODELS_DIR: modelsDir,
    });
    try {
      const metricsPort = Number(new URL(service.metricsUrl).port);
      expect(service.output()).toContain(`metrics on http://127.0.0.1:${metricsPort}/metrics`);
      expect(listeningOn(service.port)).toEqual([ANY]);
      expect(listeningOn(metricsPort)).toEqual([LOOPBACK]);
      expect((await fetch(service.metricsUrl)).status).toBe(200);
    } finally {
      await service.stop();
    }
  });
});
