/**
 * What a model's GPU services say of it (ListModels): how many visual tokens
 * an image becomes and the twig's shape, so that a client can choose a
 * retain budget (R-bar) before its first request. Best effort: when no shard
 * answers in time, there is nothing to say.
 */
import type { ModelInfo } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { gpuClients } from "./client.js";
import { shardPool } from "./shard-pool.js";

const TIMEOUT_MS = 3000;

/** The first answer of the model's shards, in shard order; undefined when none knows the model. */
export async function modelInfo(
  model: string,
  urls: readonly string[],
  token?: string,
): Promise<ModelInfo | undefined> {
  for (const url of shardPool.healthyFirst(urls)) {
    try {
      const res = await gpuClients(url, token).inference.listModels({}, { signal: AbortSignal.timeout(TIMEOUT_MS) });
      const found = res.models.find((m) => m.name === model);
      if (found) return found;
    } catch (err) {
      console.warn(`ListModels on ${url} failed: ${(err as Error).message}`);
    }
  }
  return undefined;
}

/** The `twigvlm` object of GET /v1/models/{id}. */
export function twigModel(m: ModelInfo) {
  return {
    visual_tokens: m.visualTokens,
    num_layers: m.numLayers,
    context_length: m.contextLength,
    twig: m.hasTwig
      ? {
          k: m.twigK,
          t: m.twigT,
          final_wipe_layer: m.finalWipeLayer,
          default_retain_budget: m.defaultRetainBudget,
          // the model's own share to prune by default, R-bar from each request's N (default_retain_budget is then the largest N's)
          ...(m.defaultPrunedFraction > 0 ? { default_pruned_fraction: m.defaultPrunedFraction } : {}),
        }
      : null,
    // N varies per request (LLaVA-NeXT's pictures, videos): visual_tokens is then the most a picture gives
    ...(m.visualTokensVary ? { visual_tokens_vary: true } : {}),
    ...(m.maxVideoFrames ? { video: { tokens_per_frame: m.videoTokensPerFrame, max_frames: m.maxVideoFrames } } : {}),
  };
}
