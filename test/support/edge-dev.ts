/**
 * Runs the real edge under `wrangler dev` on a loopback port for a test or a
 * benchmark: applies the D1 migrations to a fresh local state directory, then
 * starts `wrangler dev` with the given variables, and waits until it is ready.
 * The dev tenant and its key come from edge/.dev.vars (see devApiKey()).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "./gpu-service.js";

const edgeDir = join(repoRoot, "edge");
const wrangler = join(repoRoot, "node_modules/wrangler/bin/wrangler.js");
const quietEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };

/** The local development API key (DEV_API_KEY in edge/.dev.vars). */
export function devApiKey(): string {
  const line = readFileSync(join(edgeDir, ".dev.vars"), "utf8")
    .split("\n")
    .find((l) => l.startsWith("DEV_API_KEY="));
  if (!line) throw new Error("edge/.dev.vars has no DEV_API_KEY");
  return line.slice("DEV_API_KEY=".length).trim();
}

export interface EdgeDevProcess {
  url: string;
  /** The wrangler process (its workerd children run the proxy worker and the user worker). */
  pid: number;
  output: () => string;
  stop(): Promise<void>;
}

function run(args: string[], onOutput: (s: string) => void): ChildProcess {
  const child = spawn(process.execPath, [wrangler, ...args], {
    cwd: edgeDir,
    env: quietEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.on("data", (d: Buffer) => onOutput(d.toString()));
  child.stderr?.on("data", (d: Buffer) => onOutput(d.toString()));
  return child;
}

export async function startEdgeDev(port: number, vars: Record<string, string>): Promise<EdgeDevProcess> {
  const state = mkdtempSync(join(tmpdir(), "twigserve-edge-state-"));
  let output = "";
  const collect = (s: string) => {
    output += s;
  };
  const migrate = run(["d1", "migrations", "apply", "DB", "--local", "--persist-to", state], collect);
  const code = await new Promise<number | null>((resolve) => migrate.once("exit", resolve));
  if (code !== 0) throw new Error(`wrangler d1 migrations apply failed (${code}):\n${output}`);

  const varArgs = Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]);
  const child = run(
    [
      "dev",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--persist-to",
      state,
      "--inspector-port",
      String(port + 1),
      ...varArgs,
    ],
    collect,
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  while (true) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited with ${child.exitCode}:\n${output}`);
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(3000) });
      await res.body?.cancel();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGTERM");
        throw new Error(`wrangler dev did not answer in time:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  return {
    url,
    pid: child.pid ?? 0,
    output: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => {
          rmSync(state, { recursive: true, force: true });
          resolve();
        };
        if (child.exitCode !== null) return done();
        child.once("exit", done);
        child.kill("SIGTERM");
      }),
  };
}
