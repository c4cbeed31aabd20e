/**
 * Cancellation through the real service process (one engine worker): a caller
 * that goes away mid-stream frees the worker at once (the next request waits
 * about one decoding step, not for the rest of the cancelled generation), and
 * over many cancellations the process's memory returns to its baseline
 * (resident set read from /proc, main-thread heap from the metrics endpoint).
 * The measured numbers are printed; the assertions are generous bounds.
 */
import { readFileSync } from "node:fs";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import { percentile, readMetric, serviceClient } from "../../support/service-client.js";

const PORT = 27281;
const WARM_UP = 10;
const ROUNDS = 60;
let service: GpuServiceProcess & { modelDir: string };
let client: ReturnType<typeof serviceClient>;

/** Resident set size of the service process (all its threads), in MB. */
function rssMb(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) / 1024;
}

beforeAll(async () => {
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 10, g: 90, b: 200 } } })
    .png()
    .toBuffer();
  service = await startTinyModelService(PORT, 6, {}, { alwaysTiny: true });
  client = serviceClient(PORT, png);
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

describe("cancellation in the real service", () => {
  it("frees the worker within about a decoding step, and memory returns to its baseline over repeated cancels", async () => {
    const pid = service.child.pid as number;
    const full = await client.call();
    expect(full.code).toBe("OK");
    const fullMs = full.endedAt - full.sentAt;
    const stepMs = (full.decodeMs ?? 0) / Math.max(1, (full.completionTokens ?? 1) - 1);

    const queueMs: number[] = [];
    const abortToStart: number[] = [];
    const rss: number[] = [];
    const heap: number[] = [];
    for (let round = 0; round < WARM_UP + ROUNDS; round++) {
      if (round >= WARM_UP && (round - WARM_UP) % 15 === 0) {
        rss.push(rssMb(pid));
        heap.push((await readMetric(service.metricsUrl, "nodejs_heap_size_used_bytes")) / 2 ** 20);
      }
      const ctrl = new AbortController();
      let abortedAt = 0;
      const cancelled = await client.call(
        {},
        {
          signal: ctrl.signal,
          onDelta: (n) => {
            if (n === 2) {
              abortedAt = performance.now();
              ctrl.abort();
            }
          },
        },
      );
      expect(cancelled.code === "OK" ? "finished" : "cancelled").toBe("cancelled");
      const next = await client.call({ sampling: { maxTokens: 4 } });
      expect(next.code).toBe("OK");
      if (round >= WARM_UP) {
        queueMs.push(next.queueMs ?? Number.NaN);
        abortToStart.push((next.startedAt ?? Number.NaN) - abortedAt);
      }
    }
    rss.push(rssMb(pid));
    heap.push((await readMetric(service.metricsUrl, "nodejs_heap_size_used_bytes")) / 2 ** 20);

    const f = (x: number) => x.toFixed(2);
    console.log(
      `cancel: one decoding step ${f(stepMs)} ms (engine), a whole 120-token request ${f(fullMs)} ms; ` +
        `the next request waited for a worker p50 ${f(percentile(queueMs, 50))} ms, p90 ${f(percentile(queueMs, 90))} ms, ` +
        `max ${f(Math.max(...queueMs))} ms; abort -> next Started p50 ${f(percentile(abortToStart, 50))} ms, p90 ${f(percentile(abortToStart, 90))} ms`,
    );
    console.log(
      `memory over ${ROUNDS} cancels (after ${WARM_UP} to warm up), every 15: rss ${rss.map((x) => x.toFixed(1)).join(" -> ")} MB; ` +
        `main heap ${heap.map((x) => x.toFixed(1)).join(" -> ")} MB`,
    );
    // if cancelling did not stop the engine, the next request would wait for the rest of a whole request
    expect(percentile(queueMs, 50)).toBeLessThan(fullMs / 4);
    // KV caches and buffers of cancelled requests are released: no growth proportional to the cancels
    expect(rss.at(-1) as number).toBeLessThan(rss[0] + 64);
    expect(heap.at(-1) as number).toBeLessThan(heap[0] + 32);
  }, 120_000);
});
