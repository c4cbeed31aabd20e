/** Environment → ServiceConfig: TLS files both or neither, image limits, log settings, exposure without a token. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isLoopback, loadConfig } from "../../../gpu-service/src/server/config.js";

const dir = mkdtempSync(join(tmpdir(), "twigserve-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("loadConfig", () => {
  it("runs cleartext, logs at info without prompts, with 20 MiB / 40 Mpixel / 8192 px / 20:1 image limits by default", () => {
    const c = loadConfig({});
    expect(c.tls).toBeUndefined();
    expect(c).toMatchObject({
      logLevel: "info",
      logPrompts: false,
      image: { maxBytes: 20 * 1024 * 1024, maxPixels: 40_000_000, maxSide: 8192, maxAspectRatio: 20 },
    });
  });

  it("reads the certificate and key files, and wants both", () => {
    writeFileSync(join(dir, "c.pem"), "CERT");
    writeFileSync(join(dir, "k.pem"), "KEY");
    expect(loadConfig({ TWIG_TLS_CERT: join(dir, "c.pem"), TWIG_TLS_KEY: join(dir, "k.pem") }).tls).toEqual({
      cert: "CERT",
      key: "KEY",
    });
    expect(() => loadConfig({ TWIG_TLS_CERT: join(dir, "c.pem") })).toThrow(/must be set together/);
    expect(() => loadConfig({ TWIG_TLS_CERT: join(dir, "nope.pem"), TWIG_TLS_KEY: join(dir, "k.pem") })).toThrow(
      /ENOENT/,
    );
  });

  it("takes image limits and log settings from the environment and refuses nonsense", () => {
    const c = loadConfig({
      TWIG_MAX_IMAGE_BYTES: "1000",
      TWIG_MAX_IMAGE_PIXELS: "4096",
      TWIG_MAX_IMAGE_SIDE: "300",
      TWIG_MAX_IMAGE_ASPECT: "2.5",
      TWIG_LOG_LEVEL: "warn",
      TWIG_LOG_PROMPTS: "1",
    });
    expect(c).toMatchObject({
      image: { maxBytes: 1000, maxPixels: 4096, maxSide: 300, maxAspectRatio: 2.5 },
      logLevel: "warn",
      logPrompts: true,
    });
    expect(() => loadConfig({ TWIG_LOG_LEVEL: "loud" })).toThrow(/TWIG_LOG_LEVEL must be one of/);
    expect(() => loadConfig({ TWIG_MAX_IMAGE_PIXELS: "-5" })).toThrow(/non-negative integer/);
    expect(() => loadConfig({ TWIG_MAX_IMAGE_ASPECT: "0" })).toThrow(/TWIG_MAX_IMAGE_ASPECT must be a positive number/);
  });

  it("takes video limits from the environment: 20 MiB, 60 s, 8 frames, 4096x2160 frames, 20 s of decoding by default", () => {
    expect(loadConfig({}).video).toEqual({
      maxBytes: 20 * 1024 * 1024,
      maxSeconds: 60,
      maxFrames: 8,
      maxFramePixels: 4096 * 2160,
      timeoutMs: 20_000,
    });
    const c = loadConfig({
      TWIG_MAX_VIDEO_BYTES: "5000",
      TWIG_MAX_VIDEO_SECONDS: "2.5",
      TWIG_MAX_VIDEO_FRAMES: "4",
      TWIG_MAX_VIDEO_FRAME_PIXELS: "10000",
      TWIG_VIDEO_DECODE_TIMEOUT_MS: "500",
    });
    expect(c.video).toEqual({ maxBytes: 5000, maxSeconds: 2.5, maxFrames: 4, maxFramePixels: 10000, timeoutMs: 500 });
    expect(() => loadConfig({ TWIG_MAX_VIDEO_SECONDS: "-1" })).toThrow(
      /TWIG_MAX_VIDEO_SECONDS must be a positive number/,
    );
    expect(() => loadConfig({ TWIG_MAX_VIDEO_FRAMES: "two" })).toThrow(/non-negative integer/);
  });

  it("refuses a non-loopback address without a service token, unless told the network is trusted", () => {
    const loopback = ["127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"];
    const exposed = ["0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "gpu.internal", "::ffff:10.0.0.1"];
    expect(loopback.filter(isLoopback)).toEqual(loopback);
    expect(exposed.filter(isLoopback)).toEqual([]);
    let refused = 0;
    for (const host of exposed) {
      expect(() => loadConfig({ TWIG_GPU_HOST: host }), host).toThrow(
        `TWIG_GPU_HOST=${host} is not a loopback address and TWIG_SERVICE_TOKEN is not set`,
      );
      expect(loadConfig({ TWIG_GPU_HOST: host, TWIG_SERVICE_TOKEN: "t" }).host).toBe(host);
      expect(loadConfig({ TWIG_GPU_HOST: host, TWIG_ALLOW_UNAUTHENTICATED: "1" }).serviceToken).toBeUndefined();
      refused++;
    }
    expect(refused).toBe(exposed.length);
    expect(loadConfig({}).host).toBe("127.0.0.1");
  });

  it("starts each engine worker's heap at 128 MB unless TWIG_ENGINE_HEAP_MB says otherwise (0: V8's own)", () => {
    expect(loadConfig({}).engineHeapMb).toBe(128);
    expect(loadConfig({ TWIG_ENGINE_HEAP_MB: "0" }).engineHeapMb).toBe(0);
    expect(loadConfig({ TWIG_ENGINE_HEAP_MB: "512" }).engineHeapMb).toBe(512);
    expect(() => loadConfig({ TWIG_ENGINE_HEAP_MB: "-1" })).toThrow(/non-negative integer/);
  });

  it("prefills up to 480 prompt rows between two decoding rounds unless TWIG_PREFILL_ROWS says otherwise", () => {
    expect(loadConfig({}).prefillRowsPerRound).toBe(480);
    expect(loadConfig({ TWIG_PREFILL_ROWS: "128" }).prefillRowsPerRound).toBe(128);
    expect(loadConfig({ TWIG_PREFILL_ROWS: "0" }).prefillRowsPerRound).toBe(1);
    expect(() => loadConfig({ TWIG_PREFILL_ROWS: "many" })).toThrow(/TWIG_PREFILL_ROWS/);
  });

  it("batches up to 16 requests a worker unless TWIG_MAX_BATCH says otherwise (1: one at a time)", () => {
    expect(loadConfig({}).maxBatch).toBe(16);
    expect(loadConfig({ TWIG_MAX_BATCH: "1" }).maxBatch).toBe(1);
    expect(loadConfig({ TWIG_MAX_BATCH: "0" }).maxBatch).toBe(1);
    expect(() => loadConfig({ TWIG_MAX_BATCH: "many" })).toThrow(/non-negative integer/);
  });

  it("serves metrics on loopback unless TWIG_METRICS_HOST says otherwise", () => {
    expect(loadConfig({ TWIG_GPU_HOST: "0.0.0.0", TWIG_SERVICE_TOKEN: "t" }).metricsHost).toBe("127.0.0.1");
    expect(loadConfig({ TWIG_METRICS_HOST: "0.0.0.0" }).metricsHost).toBe("0.0.0.0");
  });
});
