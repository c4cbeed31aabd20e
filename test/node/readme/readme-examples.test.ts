/**
 * The README's examples, run as written against the real stack: the GPU
 * service on the demo model and the edge under `wrangler dev` on free ports
 * (test/support/demo-stack.ts). Every code block of the README carries a
 * marker (test/support/readme-examples.ts): `run` blocks are executed (shell
 * with bash, TypeScript with tsx) and checked for what the text around them
 * says; `shape` blocks (JSON fragments) are held against real answers; `skip`
 * blocks say why they are not run. Only the host, the ports, the secrets file and
 * /tmp/ are substituted (`localize`).
 */
import { type SpawnOptions, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { writeDevVars } from "../../../scripts/dev-vars.js";
import { type DemoStack, startDemoStack } from "../../support/demo-stack.js";
import { freePort } from "../../support/free-port.js";
import { repoRoot } from "../../support/gpu-service.js";
import { type Example, extractExamples, type Localization, localize } from "../../support/readme-examples.js";

const README = readFileSync(join(repoRoot, "README.md"), "utf8");
let examples: Example[] = [];
let extractionError: Error | undefined;
try {
  examples = extractExamples(README);
} catch (err) {
  extractionError = err as Error;
}

/** Parsed JSON answers, checked field by field. */
// biome-ignore lint/suspicious/noExplicitAny: JSON read off the wire, each field checked where it is used
type Json = Record<string, any>;

/** A safety net only: every step waits on a process or a response; a loaded 2-core machine is slow. */
const TIMEOUT = 400_000;

let stack: DemoStack;
let where: Localization;

beforeAll(async () => {
  stack = await startDemoStack();
  const tmp = mkdtempSync(join(tmpdir(), "twigserve-readme-"));
  // the examples read the dev key and admin token from edge/.dev.vars, as npm start writes it
  const devVars = join(tmp, "dev.vars");
  writeDevVars(devVars, stack.edge.secrets);
  where = { edgeUrl: stack.edge.url, gpuUrl: stack.gpu.url, devVars, tmp };
}, 240_000);

afterAll(async () => {
  await stack?.stop();
  if (where) rmSync(where.tmp, { recursive: true, force: true });
});

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], ...opts });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d;
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs an example as written (localized): shell blocks with bash, TypeScript blocks with tsx from the repository's root. */
async function runExample(ex: Example, env: Record<string, string> = {}): Promise<Ran> {
  const code = localize(ex.code, where);
  const opts = { env: { ...process.env, ...env } };
  if (ex.lang === "sh") return run("bash", ["-e", "-o", "pipefail", "-c", code], opts);
  if (ex.lang === "ts") {
    const dir = join(repoRoot, "test-output", "readme");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${ex.name}.mts`);
    writeFileSync(file, code);
    return run(process.execPath, ["--import", "tsx", file], opts);
  }
  throw new Error(`README.md line ${ex.line}: no way to run a "${ex.lang}" block`);
}

/** The JSON values written one after another in `text` (curl prints bodies without separators). */
function jsonValues(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{" || ch === "[") {
      if (depth++ === 0) start = i;
    } else if ((ch === "}" || ch === "]") && --depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
  }
  return out;
}

/** A chat completion stream's data events, checked to end with [DONE]. */
function sse(text: string): Json[] {
  const data = text
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice("data: ".length));
  expect(data.at(-1)).toBe("[DONE]");
  return data.slice(0, -1).map((d) => JSON.parse(d));
}

/** The `"twigvlm": {...}` fragments of a shape block, parsed. */
function twigvlmFragments(code: string): Json[] {
  return code
    .split(/^(?="twigvlm":)/m)
    .filter((f) => f.trim() !== "")
    .map((f) => JSON.parse(`{${f}}`).twigvlm);
}

const sortedKeys = (o: object) => Object.keys(o).sort();

const scene = (n: string) => readFileSync(join(repoRoot, "training", "data", "test", `${n}.png`));

/** A streamed chat completion through the stack with the dev key, as the shape blocks describe. */
async function streamedChat(twigvlm: unknown): Promise<Json[]> {
  const res = await fetch(`${stack.edge.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${stack.devKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: "demo",
      stream: true,
      temperature: 0,
      max_tokens: 48,
      twigvlm,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: `data:image/png;base64,${scene("0000").toString("base64")}` } },
            { type: "text", text: "describe the picture ." },
          ],
        },
      ],
    }),
  });
  expect(res.status, await res.clone().text()).toBe(200);
  return sse(await res.text());
}

const answerOf = (chunks: Json[]) => chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");

/** What each `run` example must show, as the README's text around it says. */
const RUN: Record<string, (ex: Example) => Promise<void>> = {
  async "start-check"(ex) {
    const [gpuPort, edgePort] = [await freePort(), await freePort({ pair: true })];
    // npm start's ports are its documented variables: the only substitution this example needs
    const r = await runExample(ex, { TWIG_GPU_PORT: String(gpuPort), TWIG_EDGE_PORT: String(edgePort) });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain("TwigServe is up.");
    expect(r.stdout).toContain(`playground:  http://127.0.0.1:${edgePort}/playground/`);
    expect(r.stdout).toMatch(/^A: \S.*/m);
    expect(r.stdout).toMatch(/^\([\d.]+ tok\/s, \d+\/144 visual tokens kept, \d+\/\d+ drafted tokens accepted\)$/m);
  },
  async cli(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const stats = r.stdout.split("\n").filter((l) => /^\[(twig|base)\] \d+ tokens, finish /.test(l));
    expect(stats).toHaveLength(2);
    expect(stats[0]).toMatch(/^\[twig\] .* visual tokens \d+\/144;/);
    // the demo model's description of the scene names its circles and its cross
    const answer = r.stdout.split("\n")[r.stdout.split("\n").indexOf(stats[0]) - 1];
    expect(answer).toMatch(/circle/);
    expect(answer).toMatch(/cross/);
    expect(existsSync(join(where.tmp, "tiny", "config.json"))).toBe(true);
  },
  async healthz(ex) {
    const r = await runExample(ex);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ status: "ok" });
  },
  async "chat-stream"(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr).toBe(0);
    const chunks = sse(r.stdout);
    expect(chunks[0].object).toBe("chat.completion.chunk");
    expect(answerOf(chunks)).toMatch(/circle/);
  },
  async "upload-and-ask"(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr).toBe(0);
    const [file, answer] = jsonValues(r.stdout) as Json[];
    expect(file.id).toBe(`file-${createHash("sha256").update(scene("0001")).digest("hex")}`);
    expect(answer.object).toBe("chat.completion");
    expect(answer.choices[0].message.content.trim()).not.toBe("");
    expect(answer.twigvlm).toMatchObject({ visual_tokens: 144, visual_tokens_kept: expect.any(Number) });
  },
  async error(ex) {
    const r = await runExample(ex);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.at(-1)).toBe("401");
    expect(JSON.parse(lines.slice(0, -1).join("\n"))).toMatchObject({
      error: { message: expect.any(String), type: "authentication_error", code: "missing_api_key", param: null },
    });
  },
  async admin(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr).toBe(0);
    const m = /^200\n(\{.*\})401\n$/s.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(JSON.parse(m?.[1] ?? "")).toMatchObject({ id: expect.stringMatching(/^key_/), revoked: true });
  },
  async "routes-admin"(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr).toBe(0);
    const [set, seen, removed] = jsonValues(r.stdout) as Json[];
    expect(set).toEqual({ model: "demo", source: "admin", urls: [where.gpuUrl] });
    expect(seen).toEqual({ source: "admin", breaker: "closed" });
    expect(removed).toMatchObject({ model: "demo", source: "MODEL_ROUTES", urls: [where.gpuUrl] });
  },
  async "openai-client"(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/circle/);
  },
  async "eval-and-parity"(ex) {
    const r = await runExample(ex);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    // parity and eval print their tables on stdout and their closing lines where they print progress
    const printed = r.stdout + r.stderr;
    expect(printed).toMatch(/^parity: all \d+ cases agree with PyTorch/m);
    expect(printed).toMatch(/^eval: wrote eval\.json, eval\.md/m);
    expect(existsSync(join(where.tmp, "eval", "eval.json"))).toBe(true);
  },
};

/** What each `shape` example must match in real answers. */
const SHAPE: Record<string, (ex: Example) => Promise<void>> = {
  async "twigvlm-request"(ex) {
    const [request] = twigvlmFragments(ex.code);
    const chunks = await streamedChat(request);
    const final = chunks.find((c) => c.choices[0]?.finish_reason)?.twigvlm;
    expect(final.mode).toBe(request.mode);
    // retain_budget is R-bar: the demo model (N 144, K 2, K_f 24, L 32) keeps R of its visual tokens
    const shape = { visualTokens: 144, numLayers: 32, k: 2, finalWipeLayer: 24 };
    expect(final.visual_tokens_kept).toBe(keptTokensForBudget(request.retain_budget, shape));
  },
  async "twigvlm-stream"(ex) {
    const [first, content] = twigvlmFragments(ex.code);
    const chunks = await streamedChat({ mode: "twig" });
    expect(sortedKeys(chunks[0].twigvlm)).toEqual(sortedKeys(first));
    expect(chunks[0].twigvlm.visual_tokens).toBe(first.visual_tokens);
    const [grid] = chunks[0].twigvlm.visual_grids;
    expect(sortedKeys(grid)).toEqual(sortedKeys(first.visual_grids[0]));
    expect([grid.rows, grid.cols]).toEqual([first.visual_grids[0].rows, first.visual_grids[0].cols]);
    const pieces = chunks.filter((c) => c.choices[0]?.delta.content);
    expect(pieces.length).toBeGreaterThan(0);
    for (const p of pieces) expect(sortedKeys(p.twigvlm)).toEqual(sortedKeys(content));
  },
  async "twigvlm-final"(ex) {
    const [documented] = twigvlmFragments(ex.code);
    const chunks = await streamedChat({ mode: "twig" });
    const final = chunks.find((c) => c.choices[0]?.finish_reason)?.twigvlm;
    expect(sortedKeys(final)).toEqual(sortedKeys(documented));
  },
  async "model-info"(ex) {
    const [documented] = twigvlmFragments(ex.code);
    const res = await fetch(`${stack.edge.url}/v1/models/demo`, {
      headers: { authorization: `Bearer ${stack.devKey}` },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { twigvlm: unknown }).twigvlm).toEqual(documented);
  },
};

describe("the README's examples", () => {
  it("marks every code block as run, shape or skip", () => {
    expect(extractionError?.message).toBeUndefined();
    expect(examples.length).toBeGreaterThan(0);
  });

  it("has a check for every run and shape example, and an example for every check", () => {
    const named = (kind: string) => examples.filter((e) => e.kind === kind).map((e) => e.name);
    expect(named("run").sort()).toEqual(Object.keys(RUN).sort());
    expect(named("shape").sort()).toEqual(Object.keys(SHAPE).sort());
    console.log(
      `README examples: ${examples.length} blocks; run: ${named("run").join(", ")}; shape: ${named("shape").join(", ")}; skipped: ${examples
        .filter((e) => e.kind === "skip")
        .map((e) => `line ${e.line} (${e.name})`)
        .join("; ")}`,
    );
  });

  for (const [name, check] of Object.entries({ ...RUN, ...SHAPE })) {
    it(
      `${name in RUN ? "runs" : "holds real answers to"} the "${name}" example`,
      async () => {
        const ex = examples.find((e) => e.name === name);
        expect(ex, `README.md has no example marked ${name}`).toBeDefined();
        await check(ex as Example);
      },
      TIMEOUT,
    );
  }
});
