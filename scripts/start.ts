/**
 * `npm start`: runs the whole service locally — the GPU service on the models
 * directory and the edge under `wrangler dev` — waits until both answer, shows
 * what they answer, and keeps running until Ctrl-C. `--check` exits after that.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

const root = fileURLToPath(new URL("..", import.meta.url));
const gpuPort = Number(process.env.TWIG_GPU_PORT || 50651);
const edgePort = Number(process.env.TWIG_EDGE_PORT || 8787);
const gpuUrl = `http://127.0.0.1:${gpuPort}`;
const edgeUrl = `http://127.0.0.1:${edgePort}`;
const checkOnly = process.argv.includes("--check");
const children: ChildProcess[] = [];

function run(name: string, cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): ChildProcess {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const prefix = (chunk: Buffer) =>
    chunk
      .toString()
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => `[${name}] ${line}\n`)
      .join("");
  child.stdout?.on("data", (d: Buffer) => process.stdout.write(prefix(d)));
  child.stderr?.on("data", (d: Buffer) => process.stderr.write(prefix(d)));
  child.on("exit", (code, signal) => {
    if (!stopping) {
      console.error(`${name} exited (${signal ?? code}); stopping`);
      stop(1);
    }
  });
  children.push(child);
  return child;
}

async function waitFor(url: string, what: string, timeoutMs = 120_000): Promise<Response> {
  const deadline = Date.now() + timeoutMs;
  let lastError = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
      if (res.ok) return res;
      lastError = `HTTP ${res.status}: ${await res.text()}`;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${what} did not become ready at ${url}: ${lastError}`);
}

let stopping = false;
function stop(code: number): void {
  stopping = true;
  for (const child of children) child.kill("SIGTERM");
  setTimeout(() => process.exit(code), 1500).unref();
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

run("gpu", process.execPath, ["--import", "tsx", "src/main.ts"], `${root}/gpu-service`, {
  TWIG_GPU_PORT: String(gpuPort),
});
run(
  "edge",
  process.execPath,
  [
    `${root}/node_modules/wrangler/bin/wrangler.js`,
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(edgePort),
    "--var",
    `GPU_SERVICE_URL:${gpuUrl}`,
  ],
  `${root}/edge`,
);

try {
  const health = await waitFor(`${edgeUrl}/healthz`, "the edge (wrangler dev) and the GPU service behind it");
  console.log(`\nTwigServe is up.\n  edge:        ${edgeUrl}\n  GPU service: ${gpuUrl}\n`);
  console.log(`GET ${edgeUrl}/healthz -> ${JSON.stringify(await health.json())}`);
  const models = await fetch(`${gpuUrl}/twigvlm.v1.InferenceService/ListModels`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  console.log(`ListModels -> ${await models.text()}`);
  if (checkOnly) stop(0);
  else console.log("\nPress Ctrl-C to stop.");
} catch (err) {
  console.error((err as Error).message);
  stop(1);
}
