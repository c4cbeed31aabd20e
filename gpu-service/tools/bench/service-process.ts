/**
 * The real GPU service process for benchmarks: `gpu-service/src/main.ts` on a
 * free loopback port, serving one models directory, started and waited for
 * until it logs that it serves. It is killed when the benchmark exits.
 * For a look inside: BENCH_NODE_FLAGS (space-separated) are node's flags for
 * the service (e.g. `--trace-gc`, which reach its engine workers too), and
 * BENCH_SERVICE_LOG names a file its output is appended to.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const serviceEntry = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

export interface BenchService {
  port: number;
  child: ChildProcess;
  /** Everything the service wrote so far. */
  output: () => string;
  /** Its Prometheus endpoint, when it started one. */
  metricsUrl?: string;
}

/** Starts the service on `modelsDir` with `env` added; resolves once it serves. */
export async function startServiceProcess(modelsDir: string, env: Record<string, string>): Promise<BenchService> {
  const flags = process.env.BENCH_NODE_FLAGS?.split(" ").filter((f) => f !== "") ?? [];
  const child = spawn(process.execPath, [...flags, "--import", "tsx", serviceEntry], {
    env: {
      ...process.env,
      TWIG_GPU_HOST: "127.0.0.1",
      TWIG_GPU_PORT: "0",
      TWIG_METRICS_PORT: "0",
      TWIG_MODELS_DIR: modelsDir,
      TWIG_DEFAULT_MODEL: "bench",
      TWIG_LOG_LEVEL: "info", // the start-up lines this waits for are info lines
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  process.once("exit", () => child.kill("SIGKILL")); // never leave the service behind
  let output = "";
  const log = process.env.BENCH_SERVICE_LOG;
  return new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the service did not start within 5 minutes:\n${output}`));
    }, 300_000);
    const onData = (d: Buffer) => {
      output += d;
      if (log) appendFileSync(log, d);
      const port = /listening on [^:]+:(\d+)/.exec(output)?.[1];
      if (port && output.includes("gpu-service: serving")) {
        clearTimeout(timer);
        const metricsUrl = /metrics on (http:\/\/[^\s"]+\/metrics)/.exec(output)?.[1];
        resolvePort({ port: Number(port), child, output: () => output, metricsUrl });
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`the service exited with ${code}:\n${output}`)));
  });
}
