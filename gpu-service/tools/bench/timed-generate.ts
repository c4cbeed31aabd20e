/**
 * One Generate call timed as the service benchmarks (service.ts, service-batching.ts) count it:
 * the time to the first delta that carries tokens, the inter-token gaps (a delta of n tokens after
 * a wait of t counts as n gaps of t / n, so that each token weighs the same in the percentiles),
 * the time to the end of the stream and the tokens streamed; and their percentiles.
 */
import type { Client } from "@connectrpc/connect";
import type { GenerateRequest, InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";

export interface Timing {
  /** ms to the first token. */
  ttft: number;
  /** ms between tokens, one per token after the first delta. */
  gaps: number[];
  /** ms to the end of the stream. */
  e2e: number;
  tokens: number;
}

export async function timedGenerate(client: Client<typeof InferenceService>, req: GenerateRequest): Promise<Timing> {
  const t0 = performance.now();
  let first = Number.NaN;
  let last = t0;
  const gaps: number[] = [];
  let tokens = 0;
  for await (const ev of client.generate(req)) {
    if (ev.event.case !== "delta" || ev.event.value.tokenIds.length === 0) continue;
    const now = performance.now();
    const n = ev.event.value.tokenIds.length;
    if (Number.isNaN(first)) first = now - t0;
    else for (let i = 0; i < n; i++) gaps.push((now - last) / n);
    last = now;
    tokens += n;
  }
  return { ttft: first, gaps, e2e: performance.now() - t0, tokens };
}

/** The p-th percentile of xs (nearest rank), NaN for none. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
