/**
 * Cancellation through the real service process (one engine worker, the tiny
 * random model, which answers to max_tokens): a caller that goes away after
 * two deltas stops its generation, which the service's own count of streamed
 * deltas shows (the engine would otherwise stream all max_tokens of them),
 * and the worker serves the next request. The time a cancelled worker takes
 * to come free and the memory over many cancellations are figures, printed by
 * `npm run bench -- cancel`, not asserted here.
 */
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import { readMetric, serviceClient } from "../../support/service-client.js";

const MAX_TOKENS = 200;
const ROUNDS = 12;
/** Deltas after the first of each request (one per token in base mode), counted by the service. */
const GAPS = 'twig_inter_token_latency_seconds_count{model="tiny"}';
let service: GpuServiceProcess & { modelDir: string };
let client: ReturnType<typeof serviceClient>;

beforeAll(async () => {
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 10, g: 90, b: 200 } } })
    .png()
    .toBuffer();
  service = await startTinyModelService(0, 6, {}, { alwaysTiny: true });
  client = serviceClient(service.port, png);
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

describe("cancellation in the real service", () => {
  it("stops the generation of a caller that goes away, and serves the next request", async () => {
    const full = await client.call({ sampling: { maxTokens: MAX_TOKENS } });
    expect(full).toMatchObject({ code: "OK", completionTokens: MAX_TOKENS }); // uncancelled, it runs to the end
    const streamed: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const before = await readMetric(service.metricsUrl, GAPS);
      const ctrl = new AbortController();
      const cancelled = await client.call(
        { sampling: { maxTokens: MAX_TOKENS } },
        {
          signal: ctrl.signal,
          onDelta: (n) => {
            if (n === 2) ctrl.abort();
          },
        },
      );
      expect(cancelled.code === "OK" ? "finished" : "cancelled").toBe("cancelled");
      const next = await client.call({ sampling: { maxTokens: 4 } });
      expect(next).toMatchObject({ code: "OK", completionTokens: 4 });
      // the next request streamed 4 deltas (3 gaps); the rest are the cancelled one's (gaps + its first)
      const gaps = (await readMetric(service.metricsUrl, GAPS)) - before;
      streamed.push(gaps - 3 + 1);
    }
    console.log(`cancelled after 2 deltas of ${MAX_TOKENS}: the engine streamed ${streamed.join(", ")}`);
    expect(streamed).toHaveLength(ROUNDS);
    for (const n of streamed) {
      expect(n).toBeGreaterThanOrEqual(2);
      expect(n).toBeLessThan(MAX_TOKENS); // it stopped: uncancelled it streams every token
    }
  });
});
