/**
 * `npm start`: runs the whole service locally — the GPU service on the models
 * directory and the edge under `wrangler dev` — waits until both answer, shows
 * what they answer, and keeps running until Ctrl-C. `--check` exits after that.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { writeTinyModel } from "../gpu-service/src/engine/tiny-model.js";

process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

const root = fileURLToPath(new URL("..", import.meta.url));
const gpuPort = Number(process.env.TWIG_GPU_PORT || 50651);
const edgePort = Number(process.env.TWIG_EDGE_PORT || 8787);
const gpuUrl = `http://127.0.0.1:${gpuPort}`;
const edgeUrl = `http://127.0.0.1:${edgePort}`;
const checkOnly = process.argv.includes("--check");

// The embedded demo model when it is there; until it is, a tiny random model so that the whole path runs.
const gpuEnv: Record<string, string> = { TWIG_GPU_PORT: String(gpuPort) };
if (!process.env.TWIG_MODELS_DIR && !existsSync(join(root, "models", "demo", "config.json"))) {
  const dir = join(root, ".cache", "models");
  if (!existsSync(join(dir, "tiny", "config.json"))) writeTinyModel(join(dir, "tiny"), 0, "hf");
  Object.assign(gpuEnv, { TWIG_MODELS_DIR: dir, TWIG_DEFAULT_MODEL: "tiny" });
  console.log(
    `models/demo is not there yet: serving a tiny RANDOM model from ${dir}/tiny (its answers are noise; the path is real)`,
  );
}
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

/** One question about a generated picture, streamed from the GPU service. */
async function ask(): Promise<void> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="192" height="192"><rect width="192" height="192" fill="#8a8a7a"/><circle cx="60" cy="60" r="34" fill="#d22"/><rect x="110" y="110" width="56" height="56" fill="#23c"/></svg>`;
  const image = await sharp(Buffer.from(svg)).png().toBuffer();
  const question = "describe the picture";
  const client = createClient(InferenceService, createConnectTransport({ baseUrl: gpuUrl, httpVersion: "1.1" }));
  process.stdout.write(`\nQ: ${question} (a red circle and a blue square)\nA: `);
  for await (const ev of client.generate({
    image: { source: { case: "data", value: image } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: question }] } },
    sampling: { maxTokens: 48 },
  })) {
    if (ev.event.case === "delta") process.stdout.write(ev.event.value.text);
    if (ev.event.case === "finished") {
      const s = ev.event.value.stats;
      console.log(
        `\n(${ev.event.value.usage?.completionTokens} tokens, ${s?.tokensPerSecond.toFixed(1)} tok/s, ` +
          `${s?.visualTokensKept}/${s?.visualTokens} visual tokens kept, ${s?.acceptedTokens}/${s?.draftedTokens} drafted tokens accepted)`,
      );
    }
  }
}

let stopping = false;
function stop(code: number): void {
  stopping = true;
  for (const child of children) child.kill("SIGTERM");
  setTimeout(() => process.exit(code), 1500).unref();
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

run("gpu", process.execPath, ["--import", "tsx", "src/main.ts"], `${root}/gpu-service`, gpuEnv);
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
  await ask();
  if (checkOnly) stop(0);
  else console.log("\nPress Ctrl-C to stop.");
} catch (err) {
  console.error((err as Error).message);
  stop(1);
}
