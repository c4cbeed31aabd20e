/**
 * Connections against the real service process, with a short idle timeout
 * (TWIG_IDLE_TIMEOUT_MS) and room for two Health.Watch streams: a connection
 * that never sends a byte is closed, an HTTP/1.1 connection is closed once its
 * request is done and it stays idle, an HTTP/2 session with no stream is closed
 * while one with an open Watch stream is not, and a third Watch stream is
 * refused RESOURCE_EXHAUSTED until one of the two ends.
 */
import { once } from "node:events";
import http2 from "node:http2";
import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawExchange } from "../../../gpu-service/tools/bench/hostile-requests.js";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";

const IDLE_MS = 300;
let service: GpuServiceProcess & { modelDir: string };

beforeAll(async () => {
  service = await startTinyModelService(0, 2, {
    TWIG_IDLE_TIMEOUT_MS: String(IDLE_MS),
    TWIG_MAX_HEALTH_WATCHES: "2",
  });
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("idle connections", () => {
  it("closes a connection that never sends a byte", async () => {
    const socket = net.connect(service.port, "127.0.0.1");
    socket.on("error", () => {});
    let received = 0;
    socket.on("data", (d) => {
      received += d.length;
    });
    await once(socket, "close"); // (never closed: the test times out)
    expect(received).toBe(0);
  });

  it("closes an HTTP/1.1 connection that stays idle after its request", async () => {
    const head =
      "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
      "content-length: 2\r\nconnection: keep-alive\r\n\r\n";
    const answer = await rawExchange(service.port, head, [Buffer.from("{}")]);
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body.toString())).toEqual({ status: "SERVING" });
    expect(answer.socket.destroyed).toBe(false); // kept alive after the answer
    await once(answer.socket, "close");
  });

  it("closes an HTTP/2 session with no stream, and keeps one whose Watch stream stays open", async () => {
    const bare = http2.connect(service.url);
    bare.on("error", () => {});
    await once(bare, "close");

    const watching = http2.connect(service.url);
    watching.on("error", () => {});
    const transport = createGrpcTransport({ baseUrl: service.url });
    const ctrl = new AbortController();
    const updates: HealthCheckResponse_ServingStatus[] = [];
    const stream = (async () => {
      for await (const u of createClient(Health, transport).watch({ service: "" }, { signal: ctrl.signal }))
        updates.push(u.status);
    })().catch((e) => ConnectError.from(e).code);
    while (updates.length === 0) await sleep(10);
    expect(updates).toEqual([HealthCheckResponse_ServingStatus.SERVING]);
    // several idle periods pass with the stream open and nothing sent on it
    let ended = false;
    stream.then(() => {
      ended = true;
    });
    await sleep(IDLE_MS * 5);
    expect(ended).toBe(false);
    ctrl.abort();
    expect(await stream).toBe(Code.Canceled);
    watching.close();
  });
});

describe("Health.Watch streams are capped", () => {
  it("refuses a third stream RESOURCE_EXHAUSTED while two are open, and takes one again after one ends", async () => {
    const transport = createGrpcTransport({ baseUrl: service.url });
    const health = createClient(Health, transport);
    /** Opens a Watch stream; resolves with its first update's status, or the error code it ended with. */
    const open = (signal: AbortSignal) =>
      new Promise<HealthCheckResponse_ServingStatus | Code>((resolve) => {
        (async () => {
          for await (const u of health.watch({ service: "" }, { signal })) resolve(u.status);
        })().catch((e) => resolve(ConnectError.from(e).code));
      });
    const first = new AbortController();
    const second = new AbortController();
    expect(await open(first.signal)).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(await open(second.signal)).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const third = new AbortController();
    const refused = await open(third.signal);
    expect(refused).toBe(Code.ResourceExhausted);
    first.abort();
    // the service counts the first stream out once it sees the cancellation
    let again: HealthCheckResponse_ServingStatus | Code = Code.ResourceExhausted;
    const fourth = new AbortController();
    for (let i = 0; i < 100 && again === Code.ResourceExhausted; i++) {
      again = await open(fourth.signal);
      if (again === Code.ResourceExhausted) await sleep(20);
    }
    expect(again).toBe(HealthCheckResponse_ServingStatus.SERVING);
    second.abort();
    fourth.abort();
  });
});
