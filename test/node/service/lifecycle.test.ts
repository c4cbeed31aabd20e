import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";

let service: GpuServiceProcess & { modelDir: string };
let png: Buffer;
let client: Client<typeof InferenceService>;
let health: Client<typeof Health>;

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
  service = await startTinyModelService(0, 6, { TWIG_DRAIN_GRACE_MS: "20000" }, { alwaysTiny: true });
  const transport = createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" });
  client = createClient(InferenceService, transport);
  health = createClient(Health, transport);
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

describe("service lifecycle", () => {
  it("on SIGTERM finishes the stream in flight, refuses new work and exits", async () => {
    const events: string[] = [];
    let signalled = false;
    const inFlight = (async () => {
      for await (const ev of client.generate(request(200))) {
        events.push(ev.event.case ?? "");
        if (ev.event.case === "delta" && !signalled) {
          signalled = true;
          service.child.kill("SIGTERM");
          // new work is refused from the moment Health says NOT_SERVING
          while ((await health.check({ service: "" })).status !== 2) await new Promise((r) => setTimeout(r, 5));
          const refused = await (async () => {
            for await (const _ of client.generate(request(2))) {
              // drain
            }
          })().then(
            () => undefined,
            (e) => ConnectError.from(e).code,
          );
          expect(refused).toBe(Code.Unavailable);
        }
      }
    })();
    await inFlight;
    expect(events.at(-1)).toBe("finished");
    const code = await new Promise<number | null>((resolve) => {
      if (service.child.exitCode !== null) resolve(service.child.exitCode);
      else service.child.once("exit", (c) => resolve(c));
    });
    expect(code).toBe(0);
  });
});
