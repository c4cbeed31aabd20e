/**
 * The workload both batching benchmarks send (`bench -- service --batch`, through the real
 * service, and `bench -- batch`, in process): N concurrent streams per mode, each sending its
 * requests one after another, every request the demo model's description prompt on one of the
 * first 64 pictures of its test split.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Mode } from "../../src/engine/plan.js";

export interface BatchingBenchArgs {
  model?: string;
  batch: number;
  threads: number;
  perStream: number;
  maxTokens: number;
  levels: number[];
  modes: Mode[];
  /** The pictures' folder under training/data (default `test`, the demo model's; `next-test`: the NeXT variant's canvases). */
  pictures?: string;
  /** Prompt rows a batch prefills between two rounds (TWIG_PREFILL_ROWS; default the engine's). */
  prefillRows?: number;
}

const repo = fileURLToPath(new URL("../../..", import.meta.url));

/** The prompt every request asks. */
export const DESCRIBE = "describe the picture .";

/** The model directory: `--model`, else the shipped demo model. */
export function benchModelDir(model: string | undefined): string {
  return resolve(model ?? join(repo, "models", "demo"));
}

/** The first 64 pictures of a test split (default the demo model's), as encoded PNG bytes. */
export function testPictures(split = "test"): Buffer[] {
  const dir = join(repo, "training", "data", split);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".png"))
    .slice(0, 64)
    .map((f) => readFileSync(join(dir, f)));
}
