/**
 * Hostile requests against the real service process, sent at the wire level:
 * a gzip bomb (1 GiB of zeros in about 1 MB) in a Connect envelope and in a
 * gRPC message, bodies over the limit with and without a declared length, and
 * garbage. None is answered INTERNAL, the service answers before a refused body
 * has been sent, and the next good request is served. With a service token, an
 * unauthenticated body is refused from its headers. (Memory is not asserted
 * here: `npm run bench -- hostile` prints the service's RSS around each.)
 */
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  frame,
  gzipZeros,
  type HostileAnswer,
  postConnect,
  postGrpc,
} from "../../../gpu-service/tools/bench/hostile-requests.js";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import { serviceClient } from "../../support/service-client.js";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
let bomb: Buffer;
let png: Buffer;

beforeAll(async () => {
  bomb = await gzipZeros(GiB);
  png = await sharp({ create: { width: 24, height: 20, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toBuffer();
}, 120_000);

/** A good request right after, served to the end. */
async function stillServes(service: GpuServiceProcess, token?: string): Promise<void> {
  const client = serviceClient(service.port, png, token);
  const r = await client.call({ sampling: { maxTokens: 2 } });
  expect(r.code).toBe("OK");
}

describe("without a service token", () => {
  let service: GpuServiceProcess & { modelDir: string };
  beforeAll(async () => {
    service = await startTinyModelService(0, 3);
  }, 120_000);
  afterAll(async () => {
    await service?.stop();
  });

  it("answers a gzip bomb in a Connect envelope RESOURCE_EXHAUSTED, not INTERNAL, and serves the next request", async () => {
    expect(bomb.length).toBeLessThan(2 * MiB);
    const got = await postConnect(service.url, frame(bomb, true), { headers: { "connect-content-encoding": "gzip" } });
    expect(got.code).toBe("resource_exhausted");
    expect(got.message).toMatch(/larger than configured readMaxBytes 22020096 after decompression/);
    await stillServes(service);
  });

  it("answers a gzip bomb in a gRPC message RESOURCE_EXHAUSTED over HTTP/2", async () => {
    const got = await postGrpc(service.url, bomb, { compressed: true });
    expect(got.status).toBe(200);
    expect(got.code).toBe("8"); // RESOURCE_EXHAUSTED
    expect(got.message).toMatch(/readMaxBytes/);
    await stillServes(service);
  });

  it("refuses a body declared larger than the limit from its headers, before it is sent", async () => {
    const got = await postConnect(service.url, { zeros: 256 * MiB });
    expect(got).toMatchObject({ status: 200, code: "resource_exhausted" }); // a stream: the end-of-stream message says it
    expect(got.message).toBe("the request body is 268435456 bytes; the limit is 22020096");
    expect(got.sent).toBeLessThan(got.total);
    await stillServes(service);
  });

  it("stops reading a message over the limit in a body of undeclared length, over HTTP/1.1 and HTTP/2", async () => {
    const envelope = Buffer.alloc(5);
    envelope.writeUInt32BE(200 * MiB, 1); // one uncompressed message said to be 200 MiB long
    const got = await postConnect(service.url, Buffer.concat([envelope, Buffer.alloc(64 * MiB)]), { chunked: true });
    expect(got.code).toBe("resource_exhausted");
    expect(got.message).toMatch(/message size 209715200 is larger than configured readMaxBytes 22020096/);
    expect(got.sent).toBeLessThan(got.total);
    // the same over HTTP/2: one gRPC message of 64 MiB
    const grpc = await postGrpc(service.url, Buffer.alloc(64 * MiB));
    expect(grpc).toMatchObject({ status: 200, code: "8" });
    expect(grpc.message).toMatch(/message size 67108864 is larger than configured readMaxBytes 22020096/);
    expect(grpc.sent).toBeLessThan(grpc.total);
    await stillServes(service);
  });

  it("answers a message that is not protobuf INVALID_ARGUMENT", async () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x08, 0x96, 0x01, 0x07]);
    const answers: HostileAnswer[] = [
      await postConnect(service.url, frame(garbage, false)),
      await postGrpc(service.url, garbage),
    ];
    expect(answers.map((a) => a.code)).toEqual(["invalid_argument", "3"]);
    for (const a of answers) expect(a.message).toMatch(/the request message could not be parsed \(parse binary:/);
    await stillServes(service);
  });
});

describe("with a service token", () => {
  let service: GpuServiceProcess & { modelDir: string };
  beforeAll(async () => {
    service = await startTinyModelService(0, 3, { TWIG_SERVICE_TOKEN: "hostile-test-token" });
  }, 120_000);
  afterAll(async () => {
    await service?.stop();
  });

  it("refuses an unauthenticated bomb from its headers, before its body is sent, over Connect and gRPC", async () => {
    // a bomb followed by 256 MiB more: refused after the headers, so the sender stops early
    const body = Buffer.concat([frame(bomb, true), Buffer.alloc(256 * MiB)]);
    const connect = await postConnect(service.url, body, { headers: { "connect-content-encoding": "gzip" } });
    expect(connect).toMatchObject({ status: 200, code: "unauthenticated", message: "missing bearer token" });
    expect(connect.sent).toBeLessThan(connect.total);
    const wrong = await postConnect(service.url, frame(bomb, true), {
      headers: { "connect-content-encoding": "gzip", authorization: "Bearer nope" },
    });
    expect(wrong).toMatchObject({ code: "unauthenticated", message: "invalid service token" });
    const grpc = await postGrpc(service.url, Buffer.concat([bomb, Buffer.alloc(64 * MiB)]), { compressed: true });
    expect(grpc).toMatchObject({ status: 200, code: "16", message: "missing bearer token" });
    expect(grpc.sent).toBeLessThan(grpc.total);
    await stillServes(service, "hostile-test-token");
  });

  it("reads the body of an authenticated bomb only up to the limit", async () => {
    const got = await postConnect(service.url, frame(bomb, true), {
      headers: { "connect-content-encoding": "gzip", authorization: "Bearer hostile-test-token" },
    });
    expect(got.code).toBe("resource_exhausted");
    await stillServes(service, "hostile-test-token");
  });
});
