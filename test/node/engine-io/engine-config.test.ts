/** The service's engine settings from the environment: precision, attention, provider, graph cache. */
import { describe, expect, it } from "vitest";
import { resolveAttention } from "../../../gpu-service/src/engine/onnx/attention.js";
import { loadConfig } from "../../../gpu-service/src/server/config.js";

describe("engine settings in the service config", () => {
  it("defaults to fp32 on the CPU and reads TWIG_PRECISION, TWIG_EXECUTION_PROVIDER, TWIG_GRAPH_CACHE_DIR", () => {
    expect(loadConfig({})).toMatchObject({ precision: "fp32", provider: "cpu", graphCacheDir: undefined });
    expect(
      loadConfig({ TWIG_PRECISION: "int4", TWIG_EXECUTION_PROVIDER: "cuda", TWIG_GRAPH_CACHE_DIR: "/var/cache/twig" }),
    ).toMatchObject({ precision: "int4", provider: "cuda", graphCacheDir: "/var/cache/twig" });
    expect(loadConfig({ TWIG_PRECISION: "fp16" }).precision).toBe("fp16");
  });

  it("picks the attention implementation: auto by default (direct for wide models), or TWIG_ATTENTION", () => {
    expect(loadConfig({}).attention).toBe("auto");
    expect(loadConfig({ TWIG_ATTENTION: "contrib" }).attention).toBe("contrib");
    expect(() => loadConfig({ TWIG_ATTENTION: "flash" })).toThrow(
      /TWIG_ATTENTION must be one of auto, contrib, plain, direct/,
    );
    expect(resolveAttention("auto", 4096)).toBe("direct");
    expect(resolveAttention(undefined, 2048)).toBe("direct");
    expect(resolveAttention("auto", 96)).toBe("contrib");
    expect(resolveAttention("plain", 4096)).toBe("plain");
  });

  it("refuses values it does not know, naming the choices", () => {
    expect(() => loadConfig({ TWIG_PRECISION: "int8" })).toThrow(
      'TWIG_PRECISION must be one of fp32, fp16, int4, got "int8"',
    );
    expect(() => loadConfig({ TWIG_EXECUTION_PROVIDER: "rocm" })).toThrow(
      /TWIG_EXECUTION_PROVIDER must be one of cpu, cuda/,
    );
  });
});
