/**
 * The model registry: which models this service can serve, read from the
 * models directory. A model is a sub-directory with a `config.json` (HF LLaVA
 * layout); a `twig/` directory beside its weights holds its twig, if any.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

export interface ModelEntry {
  name: string;
  dir: string;
  architecture: string;
  visualTokens: number;
  numLayers: number;
  contextLength: number;
  twig?: { dir: string; k: number; t: number; finalWipeLayer: number };
}

type Json = Record<string, unknown>;

function readJson(path: string): Json {
  const value: unknown = JSON.parse(readFileSync(path, "utf8"));
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${path}: expected a JSON object`);
  }
  return value as Json;
}

function num(obj: Json | undefined, key: string, fallback = 0): number {
  const v = obj?.[key];
  return typeof v === "number" ? v : fallback;
}

/** Describe one model directory from its config files (no weights are read). */
export function describeModel(name: string, dir: string): ModelEntry {
  const config = readJson(join(dir, "config.json"));
  const text = (config.text_config as Json | undefined) ?? config;
  const vision = config.vision_config as Json | undefined;
  const imageSize = num(vision, "image_size", 336);
  const patchSize = num(vision, "patch_size", 14);
  const numLayers = num(text, "num_hidden_layers");
  const entry: ModelEntry = {
    name,
    dir,
    architecture: String(config.model_type ?? "llava"),
    visualTokens: (imageSize / patchSize) ** 2,
    numLayers,
    contextLength: num(text, "max_position_embeddings", 2048),
  };
  const twigConfig = join(dir, "twig", "config.json");
  if (existsSync(twigConfig)) {
    const twig = readJson(twigConfig);
    entry.twig = {
      dir: join(dir, "twig"),
      k: num(twig, "twig_K", 2),
      t: num(twig, "twig_T", 3),
      finalWipeLayer: num(twig, "final_wipe_layer", Math.floor((numLayers * 3) / 4)),
    };
  }
  return entry;
}

/** Every model sub-directory of `modelsDir`; unreadable ones are reported, not fatal. */
export function scanModels(modelsDir: string): { models: ModelEntry[]; errors: string[] } {
  const models: ModelEntry[] = [];
  const errors: string[] = [];
  if (!existsSync(modelsDir)) return { models, errors: [`models directory ${modelsDir} does not exist`] };
  for (const item of readdirSync(modelsDir, { withFileTypes: true })) {
    const dir = join(modelsDir, item.name);
    // a model may be a symbolic link to a directory kept elsewhere
    if (!item.isDirectory() && !(item.isSymbolicLink() && statSync(dir, { throwIfNoEntry: false })?.isDirectory()))
      continue;
    if (!existsSync(join(dir, "config.json"))) continue;
    try {
      models.push(describeModel(item.name, dir));
    } catch (err) {
      errors.push(`${dir}: ${(err as Error).message}`);
    }
  }
  models.sort((a, b) => a.name.localeCompare(b.name));
  return { models, errors };
}
