/**
 * Sessions for graphs too large for one protobuf message (2 GB): above a threshold,
 * a graph is written once to a cache directory as `model.onnx` plus `model.onnx.data`
 * (external data) and loaded from there; later loads of the same weights with the same
 * graph options find the files and skip building the graph at all.
 *
 * The cache key is a SHA-256 of the graph's name, its build options, every source weight
 * (shape and bytes) and GRAPH_FORMAT, so a changed checkpoint or option, or a change in how
 * graphs are built, gets a new entry. Below the
 * threshold nothing touches the disk: the graph is built and handed over as bytes.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GraphBuilder } from "../onnx/graph.js";
import type { Tensor } from "../weights.js";
import { createSession, type ort, type SessionOptions } from "./session.js";

export interface ExternalDataOptions {
  /** Where large graphs are cached (default `$TMPDIR/twigserve-graphs`). */
  graphCacheDir?: string;
  /** A graph whose source weights (as float32) exceed this many bytes goes to external data (default 1.5 GiB). */
  externalDataThreshold?: number;
}

export const DEFAULT_EXTERNAL_DATA_THRESHOLD = 1.5 * 1024 ** 3;

export function defaultGraphCacheDir(): string {
  return join(tmpdir(), "twigserve-graphs");
}

export interface GraphSource {
  /** A readable name, part of the key (e.g. "decoder" or "lm_head"). */
  name: string;
  /** Everything besides the weights that changes the graph (options, config, layer range). */
  options: unknown;
  /** The source weights the graph is built from. */
  weights: readonly Tensor[];
  build: () => GraphBuilder;
}

/**
 * Bump when the graph builders (onnx/) change what they build for the same weights and options, so
 * that graphs cached by older code are not reused. 2: graph outputs without Identity nodes, fewer
 * reshapes in direct attention. 3: direct attention's new keys and values in the buffers' orders. 4: direct
 * attention adds its two masks in one node and splits its probabilities in one. 5: a batched segment's new
 * keys and values in one output. 6: a batched segment with one query head per kv head takes its past,
 * kv_mask and new_mask with one more axis (row-wise attention).
 */
export const GRAPH_FORMAT = 6;

/** The cache key: SHA-256 over GRAPH_FORMAT, name, options and every weight's shape and bytes. */
export function graphCacheKey(source: GraphSource): string {
  const hash = createHash("sha256");
  hash.update(`graph format ${GRAPH_FORMAT}\n`);
  hash.update(source.name);
  hash.update(JSON.stringify(source.options ?? null));
  for (const t of source.weights) {
    hash.update(JSON.stringify(t.shape));
    hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return `${source.name}-${hash.digest("hex").slice(0, 32)}`;
}

/** Where a source lives in the cache, and whether it is there. */
export function graphCacheEntry(source: GraphSource, opts: ExternalDataOptions = {}): { dir: string; model: string } {
  const dir = join(opts.graphCacheDir ?? defaultGraphCacheDir(), graphCacheKey(source));
  return { dir, model: join(dir, "model.onnx") };
}

export async function createGraphSession(
  source: GraphSource,
  opts: SessionOptions & ExternalDataOptions = {},
): Promise<ort.InferenceSession> {
  const sourceBytes = source.weights.reduce((a, t) => a + t.data.length * 4, 0);
  if (sourceBytes <= (opts.externalDataThreshold ?? DEFAULT_EXTERNAL_DATA_THRESHOLD)) {
    return createSession(source.build().toBytes(), opts);
  }
  const entry = graphCacheEntry(source, opts);
  const done = join(entry.dir, "complete");
  if (!existsSync(done)) {
    // build beside the final place and rename, so a crash never leaves a half-written entry
    const staging = `${entry.dir}.building-${process.pid}-${Date.now()}`;
    mkdirSync(staging, { recursive: true });
    try {
      source
        .build()
        .saveWithExternalData(join(staging, "model.onnx"), join(staging, "model.onnx.data"), "model.onnx.data");
      writeFileSync(join(staging, "complete"), `${new Date().toISOString()}\n`);
      if (existsSync(done)) {
        rmSync(staging, { recursive: true, force: true }); // another process finished it first
      } else {
        rmSync(entry.dir, { recursive: true, force: true }); // a stale, incomplete entry
        renameSync(staging, entry.dir);
      }
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  }
  return createSession(entry.model, opts);
}
