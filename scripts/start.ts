/**
 * `npm start`: runs the whole service locally — the GPU service on the models
 * directory and the edge under `wrangler dev` — waits until both answer, shows
 * what they answer, and keeps running until Ctrl-C. `--check` exits after that.
 * The edge's local secrets (dev API key, admin token) live in edge/.dev.vars,
 * written with fresh random values the first time (see dev-vars.ts).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { budgetForPrunedFraction } from "../gpu-service/src/engine/decoding/budget.js";
import { scanModels } from "../gpu-service/src/server/registry.js";
import { writeTinyModel } from "../gpu-service/tools/make-tiny/tiny-model.js";
import { ensureDevVars } from "./dev-vars.js";

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
// A server for many at once: continuous batching (up to 16 requests a worker), the cores split between
// engine workers of one thread each, which suits a model as small as the demo (README, "Continuous
// batching"); each is the environment's when set there.
const serving = {
  TWIG_MAX_BATCH: "16",
  TWIG_ENGINE_WORKERS: String(Math.max(1, Math.min(4, availableParallelism()))),
  TWIG_ENGINE_THREADS: "1",
};
for (const [name, value] of Object.entries(serving)) if (!process.env[name]) gpuEnv[name] = value;
const setting = (name: keyof typeof serving) => process.env[name] || serving[name];
console.log(
  `GPU service: ${setting("TWIG_ENGINE_WORKERS")} engine worker(s) of ${setting("TWIG_ENGINE_THREADS")} thread(s), ` +
    `each decoding up to ${setting("TWIG_MAX_BATCH")} requests together (TWIG_ENGINE_WORKERS, TWIG_ENGINE_THREADS, TWIG_MAX_BATCH)`,
);
const model = gpuEnv.TWIG_DEFAULT_MODEL ?? process.env.TWIG_DEFAULT_MODEL ?? "demo";
// The edge routes every model the GPU service will serve (the models directory's), so that the variants
// beside the demo model (demo-next, demo-video) answer through it too.
const modelsDir = gpuEnv.TWIG_MODELS_DIR ?? process.env.TWIG_MODELS_DIR ?? join(root, "models");
const routed = [...new Set([model, ...scanModels(modelsDir).models.map((m) => m.name)])];
// The local dev tenant's key and the admin token, in edge/.dev.vars (written now if it is not there).
const devVarsPath = join(root, "edge", ".dev.vars");
const { vars: devVars, created: devVarsCreated } = ensureDevVars(devVarsPath);
const devKey = devVars.DEV_API_KEY;
if (devVarsCreated) console.log(`wrote fresh local secrets to ${devVarsPath} (not committed; delete it for new ones)`);
const children: ChildProcess[] = [];
/** The children's log lines held back while an answer streams, so that they do not break into it. */
let held: [NodeJS.WriteStream, string][] | null = null;
const write = (stream: NodeJS.WriteStream, text: string) => (held ? held.push([stream, text]) : stream.write(text));

function run(name: string, cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): ChildProcess {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const prefix = (chunk: Buffer) =>
    chunk
      .toString()
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => `[${name}] ${line}\n`)
      .join("");
  child.stdout?.on("data", (d: Buffer) => write(process.stdout, prefix(d)));
  child.stderr?.on("data", (d: Buffer) => write(process.stderr, prefix(d)));
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

/**
 * One question about a picture, streamed through the edge's OpenAI-compatible API with the dev key:
 * a held-out scene of the demo model's synthetic world (what is in it is printed beside the question).
 */
async function ask(retainBudget?: number): Promise<void> {
  const scene = readFileSync(join(root, "training", "data", "test.jsonl"), "utf8").split("\n")[0];
  const { image: file, objects } = JSON.parse(scene) as {
    image: string;
    objects: { size: string; colour: string; kind: string; position: string }[];
  };
  const image = readFileSync(join(root, "training", "data", file));
  const truth = objects.map((o) => `a ${o.size} ${o.colour} ${o.kind} at the ${o.position}`).join(", ");
  const question = "describe the picture .";
  process.stdout.write(
    `\nPOST ${edgeUrl}/v1/chat/completions (stream)\nQ: ${question} (training/data/${file}: ${truth})\nA: `,
  );
  held = [];
  try {
    await streamAnswer(question, image, retainBudget);
  } finally {
    const lines = held ?? [];
    held = null;
    for (const [stream, text] of lines) stream.write(text);
  }
}

async function streamAnswer(question: string, image: Buffer, retainBudget?: number): Promise<void> {
  const res = await fetch(`${edgeUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${devKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 64,
      // TwigVLM with 77.8% of the visual tokens pruned (R-bar = 2/9 of them), where the demo model's evaluation
      // keeps 100.0% of the base model's accuracy (its default budget, 88.9% pruned, keeps 97.0%)
      twigvlm: { mode: "twig", ...(retainBudget ? { retain_budget: retainBudget } : {}) },
      temperature: 0,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: `data:image/png;base64,${image.toString("base64")}` } },
            { type: "text", text: question },
          ],
        },
      ],
    }),
  });
  if (!res.ok || !res.body) throw new Error(`the edge answered ${res.status}: ${await res.text()}`);
  let pending = "";
  for await (const bytes of res.body.pipeThrough(new TextDecoderStream())) {
    pending += bytes;
    for (let end = pending.indexOf("\n\n"); end >= 0; end = pending.indexOf("\n\n")) {
      const event = pending.slice(0, end);
      pending = pending.slice(end + 2);
      if (!event.startsWith("data: ")) continue; // a `: keep-alive` comment
      const data = event.slice("data: ".length);
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
      // the final chunk's statistics (earlier chunks carry other twigvlm fields)
      const s = chunk.choices[0]?.finish_reason ? chunk.twigvlm : undefined;
      if (s)
        console.log(
          `\n(${s.tokens_per_second.toFixed(1)} tok/s, ${s.visual_tokens_kept}/${s.visual_tokens} visual tokens kept, ` +
            `${s.accepted_tokens}/${s.drafted_tokens} drafted tokens accepted)`,
        );
    }
  }
}

let stopping = false;
function stop(code: number): void {
  stopping = true;
  // the exit timer below is unref'd: when the loop empties first, Node exits on its own with this code
  process.exitCode = code;
  for (const child of children) child.kill("SIGTERM");
  setTimeout(() => process.exit(code), 1500).unref();
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

const wrangler = `${root}/node_modules/wrangler/bin/wrangler.js`;
// The edge's D1 tables (API keys) in its local state, before wrangler dev starts.
const migrated = spawnSync(process.execPath, [wrangler, "d1", "migrations", "apply", "DB", "--local"], {
  cwd: `${root}/edge`,
  stdio: ["ignore", "ignore", "inherit"],
});
if (migrated.status !== 0) throw new Error("wrangler d1 migrations apply --local failed");
run("gpu", process.execPath, ["--import", "tsx", "src/main.ts"], `${root}/gpu-service`, gpuEnv);
run(
  "edge",
  process.execPath,
  [
    wrangler,
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(edgePort),
    "--var",
    `GPU_SERVICE_URL:${gpuUrl}`,
    "--var",
    `MODEL_ROUTES:${JSON.stringify(Object.fromEntries(routed.map((name) => [name, [gpuUrl]])))}`,
  ],
  `${root}/edge`,
);

try {
  const health = await waitFor(`${edgeUrl}/healthz`, "the edge (wrangler dev) and the GPU service behind it");
  console.log(
    `\nTwigServe is up.\n  edge:        ${edgeUrl}\n  playground:  ${edgeUrl}/playground/\n  GPU service: ${gpuUrl}\n  dev API key: ${devKey}\n  admin token: ${devVars.ADMIN_TOKEN}\n  (local secrets in edge/.dev.vars)\n`,
  );
  console.log(`GET ${edgeUrl}/healthz -> ${JSON.stringify(await health.json())}`);
  const models = await fetch(`${gpuUrl}/twigvlm.v1.InferenceService/ListModels`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  const listed = (await models.json()) as { models: { name: string; visualTokens: number }[] };
  console.log(`ListModels -> ${JSON.stringify(listed)}`);
  const served = listed.models.find((m) => m.name === model);
  await ask(served ? budgetForPrunedFraction(7 / 9, served.visualTokens) : undefined);
  if (checkOnly) stop(0);
  else console.log(`\nTry it in a browser: ${edgeUrl}/playground/\nPress Ctrl-C to stop.`);
} catch (err) {
  console.error((err as Error).message);
  stop(1);
}
