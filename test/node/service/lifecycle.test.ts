/**
 * Draining: on SIGTERM the service refuses new work (UNAVAILABLE, Health NOT_SERVING), lets the
 * streams in flight finish and exits 0; one request at a time, and with continuous batching on
 * (TWIG_MAX_BATCH), where several streams decode together in one worker when the signal comes.
 */
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exitOf, type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";

let png: Buffer;

const request = (maxTokens: number) => ({
  model: "tiny",
  image: { source: { case: "data" as const, value: png } },
  input: { case: "conversation" as const, value: { messages: [{ role: "user", content: "describe the picture" }] } },
  sampling: { maxTokens }, // greedy: with the tiny model's seed 6 and this picture, no early end of sequence
  acceleration: { mode: Mode.BASE },
});

beforeAll(async () => {
  png = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 10, g: 90, b: 200 } } })
    .png()
    .toBuffer();
});

describe.each([
  { batch: 1, streams: 1 },
  { batch: 4, streams: 3 },
])("service lifecycle (TWIG_MAX_BATCH=$batch)", ({ batch, streams }) => {
  let service: GpuServiceProcess & { modelDir: string };
  let client: Client<typeof InferenceService>;
  let health: Client<typeof Health>;

  beforeAll(async () => {
    service = await startTinyModelService(
      0,
      6,
      { TWIG_DRAIN_GRACE_MS: "20000", TWIG_MAX_BATCH: String(batch) },
      { alwaysTiny: true },
    );
    const transport = createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" });
    client = createClient(InferenceService, transport);
    health = createClient(Health, transport);
  }, 120_000);
  afterAll(async () => {
    await service?.stop();
  });

  it(`on SIGTERM finishes the ${streams} stream(s) in flight, refuses new work and exits`, async () => {
    let streaming = 0;
    let refused: Code | undefined;
    let drained: Promise<void> | undefined;
    const drain = async () => {
      service.child.kill("SIGTERM");
      // new work is refused from the moment Health says NOT_SERVING
      while ((await health.check({ service: "" })).status !== 2) await new Promise((r) => setTimeout(r, 5));
      refused = await (async () => {
        for await (const _ of client.generate(request(2))) {
          // drain
        }
      })().then(
        () => undefined,
        (e) => ConnectError.from(e).code,
      );
    };
    const inFlight = Array.from({ length: streams }, async () => {
      const events: string[] = [];
      let tokens = 0;
      let first = true;
      for await (const ev of client.generate(request(200))) {
        events.push(ev.event.case ?? "");
        if (ev.event.case === "finished") tokens = ev.event.value.usage?.completionTokens ?? 0;
        // the signal once every stream is decoding
        if (ev.event.case === "delta" && first) {
          first = false;
          if (++streaming === streams) drained = drain();
        }
      }
      return { last: events.at(-1), tokens };
    });
    const ends = await Promise.all(inFlight);
    await drained;
    expect(ends).toEqual(Array(streams).fill({ last: "finished", tokens: 200 }));
    expect(refused).toBe(Code.Unavailable);
    expect(await exitOf(service.child)).toBe(0);
  });
});
