/**
 * Runs the real edge under `wrangler dev` on a loopback port for a test or a
 * benchmark: applies the D1 migrations to a fresh local state directory, writes
 * fresh local secrets (a dev API key, an admin token, ENVIRONMENT=development;
 * scripts/dev-vars.ts) into it and hands them to wrangler with `--env-file`, so
 * the developer's own edge/.dev.vars is neither read nor needed, then starts
 * `wrangler dev` with the given variables on ports the system picks, and waits
 * until it answers.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DevVars, newDevVars, writeDevVars } from "../../scripts/dev-vars.js";
import { exitOf, repoRoot } from "./gpu-service.js";
import { freePort } from "./ports.js";

const edgeDir = join(repoRoot, "edge");
const wrangler = join(repoRoot, "node_modules/wrangler/bin/wrangler.js");
const quietEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };

export interface EdgeDevProcess {
  url: string;
  /** The dev tenant's API key and the admin token this edge was given. */
  secrets: DevVars;
  child: ChildProcess;
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

/** Starts `wrangler dev`; `ready` says when it may be used (default: /healthz answers at all). */
export async function startEdgeDev(
  vars: Record<string, string>,
  opts: { ready?: (res: Response) => boolean } = {},
): Promise<EdgeDevProcess> {
  const state = mkdtempSync(join(tmpdir(), "twigserve-edge-state-"));
  let output = "";
  const collect = (s: string) => {
    output += s;
  };
  const migrate = run(["d1", "migrations", "apply", "DB", "--local", "--persist-to", state], collect);
  const code = await new Promise<number | null>((resolve) => migrate.once("exit", resolve));
  if (code !== 0) throw new Error(`wrangler d1 migrations apply failed (${code}):\n${output}`);

  const secrets = newDevVars();
  const envFile = join(state, "dev.vars");
  writeDevVars(envFile, secrets);
  const port = await freePort();
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
      String(await freePort()),
      "--env-file",
      envFile,
      ...varArgs,
    ],
    collect,
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    const ended = exitOf(child);
    child.kill("SIGTERM"); // nothing when it has exited
    await ended;
    rmSync(state, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  while (true) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited with ${child.exitCode}:\n${output}`);
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(3000) });
      await res.body?.cancel();
      if (opts.ready?.(res) ?? true) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`wrangler dev did not answer in time:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  return { url, secrets, child, pid: child.pid ?? 0, output: () => output, stop };
}
