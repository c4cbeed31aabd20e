/**
 * The models directory the edge's tests put behind the real GPU service: a
 * model directory (by default the trained demo model, models/demo, served as
 * `demo`) linked under its name, plus aliases of it where a test needs a
 * second route to the same model.
 */
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { demoModelDir } from "./gpu-service.js";

export interface EdgeModels {
  dir: string;
  /** The name the model is served under. */
  model: string;
  remove(): void;
}

export function edgeModelsDir(opts: { source?: string; aliases?: string[] } = {}): EdgeModels {
  const source = opts.source ? resolve(opts.source) : demoModelDir;
  const model = opts.source ? basename(source) : "demo";
  const dir = mkdtempSync(join(tmpdir(), "twigserve-edge-models-"));
  for (const name of [model, ...(opts.aliases ?? [])]) symlinkSync(source, join(dir, name));
  return { dir, model, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
