/**
 * `npm run bench -- <name> [...]` runs one benchmark of gpu-service/tools/bench
 * (engine, twig, service). `npm run bench` with no arguments runs each
 * measurement at a size that fits a few minutes, prints each one's own output
 * as it goes, and ends with one side-by-side table of their headline figures:
 *
 *   engine   decode step against its bandwidth floor      (bench engine, random weights)
 *   modes    every TwigVLM mode against base, demo model  (twig eval on held-out scenes: RelSpd, RelAcc)
 *   service  throughput at 1, 2, 4, 8 concurrent streams  (bench service, demo model)
 *   edge     a delta's added delay through the edge at 1 and 16 streams (test/bench/edge-stream-latency.ts)
 *
 * Each part runs the existing benchmark as its own process (or function) and
 * reads its figures from what it prints (or writes); a part that fails or whose
 * output changed shape is reported as such, not guessed.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const tsx = join(root, "node_modules/tsx/dist/cli.mjs");

/** Runs a TypeScript entry point with tsx, echoing and returning its output. */
function run(script: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tsx, join(root, script), ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const echo = (d: Buffer) => {
      out += d;
      process.stdout.write(d);
    };
    child.stdout.on("data", echo);
    child.stderr.on("data", echo);
    child.on("exit", (code) => resolve({ code, out }));
  });
}

/** The values of the space-aligned table row labelled `label` (bench engine's tables). */
function alignedRow(out: string, label: string): string[] | undefined {
  for (const line of out.split("\n")) {
    const t = line.trim();
    if (t.startsWith(`${label}  `))
      return t
        .slice(label.length)
        .trim()
        .split(/\s{2,}/);
  }
  return undefined;
}

/** The column names of that table: the last `n` cells of the line above the row labelled `firstLabel`. */
function alignedHeader(out: string, firstLabel: string, n: number): string[] | undefined {
  const lines = out.split("\n");
  const i = lines.findIndex((l) => l.trim().startsWith(`${firstLabel}  `));
  return i > 0
    ? lines[i - 1]
        .trim()
        .split(/\s{2,}/)
        .slice(-n)
    : undefined;
}

interface Figure {
  part: string;
  what: string;
  value: string;
}

async function engine(): Promise<Figure[]> {
  console.log("\n=== engine: decode step against its bandwidth floor (random weights, 1024 wide, 8 layers) ===");
  const { code, out } = await run("gpu-service/tools/bench/main.ts", [
    "engine",
    ...["--hidden", "1024", "--layers", "8", "--context", "600", "--precision", "fp32,int4"],
    ...["--attention", "direct", "--reps", "5"],
  ]);
  const ratio = alignedRow(out, "decode / floor");
  const step = alignedRow(out, "decode step (ms)");
  const header = step && alignedHeader(out, "prefill (ms)", step.length);
  if (code !== 0 || !header || !ratio || !step)
    return [{ part: "engine", what: "decode / floor", value: `not measured (exit ${code})` }];
  return header.map((label, i) => ({
    part: "engine",
    what: `${label}: decode step, ms (x bandwidth floor)`,
    value: `${step[i]} (${ratio[i]}x)`,
  }));
}

async function modes(): Promise<Figure[]> {
  console.log("\n=== modes: every TwigVLM mode against base on the demo model (10 held-out scenes) ===");
  const out = mkdtempSync(join(tmpdir(), "twigserve-bench-eval-"));
  try {
    const { code } = await run("gpu-service/tools/cli/main.ts", ["eval", "--limit", "10", "--out", out]);
    const file = join(out, "eval.json");
    if (code !== 0 || !existsSync(file))
      return [{ part: "modes", what: "twig eval", value: `not measured (exit ${code})` }];
    const result = JSON.parse(readFileSync(file, "utf8")) as {
      rows: { label: string; relSpdLong: number; relSpdShort: number; relAcc: number }[];
    };
    return result.rows.map((r) => ({
      part: "modes",
      what: `${r.label}: speed vs base, descriptions / short answers (accuracy vs base)`,
      value: `${r.relSpdLong.toFixed(2)}x / ${r.relSpdShort.toFixed(2)}x (${(r.relAcc * 100).toFixed(1)}%)`,
    }));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

async function service(): Promise<Figure[]> {
  console.log("\n=== service: throughput under concurrency, the real GPU service on the demo model ===");
  const { code, out } = await run("gpu-service/tools/bench/main.ts", [
    "service",
    ...["--model", "models/demo", "--per-stream", "2", "--max-tokens", "48"],
  ]);
  const figures: Figure[] = [];
  for (const line of out.split("\n")) {
    const m = /^\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*\/\s*([\d.]+)\s*\/\s*([\d.]+)/.exec(line);
    if (m)
      figures.push({
        part: "service",
        what: `${m[1]} concurrent stream(s): tokens/s (TTFT p50 ms)`,
        value: `${m[4]} (${m[5]})`,
      });
  }
  return code === 0 && figures.length > 0
    ? figures
    : [{ part: "service", what: "bench service", value: `not measured (exit ${code})` }];
}

async function edge(): Promise<Figure[]> {
  console.log("\n=== edge: a delta's delay from the GPU service to the client, demo model, 1 and 16 streams ===");
  const { code, out } = await run("test/bench/edge-stream-latency.ts", [
    ...["--model-dir", "models/demo", "--image", "training/data/test/0000.png"],
    ...["--question", "describe the picture .", "--streams", "1,16", "--rounds", "3"],
  ]);
  const figures: Figure[] = [];
  for (const line of out.split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    if (cells.length >= 8 && /^\d+$/.test(cells[1]))
      figures.push({
        part: "edge",
        what: `${cells[1]} stream(s), ${cells[2]}: delay p50 / p99 ms`,
        value: `${cells[4]} / ${cells[6]}${cells[8] && cells[8] !== "0" ? ` (${cells[8]} stream(s) failed)` : ""}`,
      });
  }
  return code === 0 && figures.length > 0
    ? figures
    : [{ part: "edge", what: "edge stream latency", value: `not measured (exit ${code})` }];
}

async function summary(): Promise<void> {
  const figures = [...(await engine()), ...(await modes()), ...(await service()), ...(await edge())];
  const width = Math.max(...figures.map((f) => f.what.length));
  console.log("\n=== everything measured, side by side (one run on this machine) ===\n");
  console.log(`| part | ${"measure".padEnd(width)} | value |`);
  console.log(`|---|${"-".repeat(width + 2)}|---|`);
  for (const f of figures) console.log(`| ${f.part} | ${f.what.padEnd(width)} | ${f.value} |`);
}

const args = process.argv.slice(2);
if (args.length === 0) await summary();
else process.exitCode = (await run("gpu-service/tools/bench/main.ts", args)).code ?? 1;
