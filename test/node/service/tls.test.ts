/**
 * TLS: the real service with a self-signed certificate made at test time
 * (openssl), called by a grpc-js client that trusts that certificate (gRPC over
 * HTTP/2 with ALPN) and by a Connect client over https (HTTP/1.1); idle
 * connections are closed (TWIG_IDLE_TIMEOUT_MS) before and after the
 * handshake. The same
 * service opts in to prompt logging, so its request lines carry the prompt.
 */
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import { grpcInferenceStub } from "../../support/service-client.js";
import { requestLogLines } from "../../support/service-logs.js";

const PROMPT = "what colour is the square ?";
let service: GpuServiceProcess & { modelDir: string };
let certDir: string;
let ca: Buffer;
let png: Buffer;

const inferenceStub = (creds: grpc.ChannelCredentials) => grpcInferenceStub(service.port, creds);

// biome-ignore lint/suspicious/noExplicitAny: run-time stubs
function grpcGenerate(client: any, requestId: string): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const out: Record<string, unknown>[] = [];
    const call = client.generate(
      {
        model: "tiny",
        requestId,
        tenantId: "tls-tenant",
        image: { data: png },
        conversation: { messages: [{ role: "user", content: PROMPT }] },
        sampling: { maxTokens: 12 },
        acceleration: { mode: "MODE_BASE" },
      },
      { deadline: Date.now() + 30_000 },
    );
    call.on("data", (d: Record<string, unknown>) => out.push(d));
    call.on("end", () => resolve(out));
    call.on("error", reject);
  });
}

beforeAll(async () => {
  certDir = mkdtempSync(join(tmpdir(), "twigserve-tls-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-keyout",
      join(certDir, "key.pem"),
      "-out",
      join(certDir, "cert.pem"),
    ],
    { stdio: "ignore" },
  );
  ca = readFileSync(join(certDir, "cert.pem"));
  png = await sharp({ create: { width: 20, height: 20, channels: 3, background: { r: 40, g: 160, b: 40 } } })
    .png()
    .toBuffer();
  service = await startTinyModelService(0, 8, {
    TWIG_TLS_CERT: join(certDir, "cert.pem"),
    TWIG_TLS_KEY: join(certDir, "key.pem"),
    TWIG_LOG_PROMPTS: "1",
    TWIG_IDLE_TIMEOUT_MS: "1500",
  });
}, 120_000);

afterAll(async () => {
  await service?.stop();
  rmSync(certDir, { recursive: true, force: true });
});

describe("the service over TLS", () => {
  it("streams the same text to grpc-js (HTTP/2, trusting the CA) and to Connect over https (HTTP/1.1)", async () => {
    const stub = inferenceStub(grpc.credentials.createSsl(ca));
    const events = await grpcGenerate(stub, "tls-grpc-1");
    stub.close();
    expect(Object.keys(events[0])).toContain("started");
    expect(events.at(-1)).toHaveProperty("finished");
    const grpcText = events.map((e) => (e.delta as { text?: string } | undefined)?.text ?? "").join("");

    const connect = createClient(
      InferenceService,
      createConnectTransport({
        baseUrl: `https://127.0.0.1:${service.port}`,
        httpVersion: "1.1",
        nodeOptions: { ca, servername: "localhost" },
      }),
    );
    let connectText = "";
    let finished = false;
    for await (const ev of connect.generate({
      model: "tiny",
      requestId: "tls-connect-1",
      image: { source: { case: "data", value: png } },
      input: { case: "conversation", value: { messages: [{ role: "user", content: PROMPT }] } },
      sampling: { maxTokens: 12 },
      acceleration: { mode: Mode.BASE },
    })) {
      if (ev.event.case === "delta") connectText += ev.event.value.text;
      if (ev.event.case === "finished") finished = true;
    }
    expect(finished).toBe(true);
    expect(connectText).toBe(grpcText);
    expect(connectText.length).toBeGreaterThan(0);
  });

  it("refuses clients that do not trust the certificate or speak cleartext", async () => {
    let refused = 0;
    for (const creds of [grpc.credentials.createSsl(), grpc.credentials.createInsecure()]) {
      const stub = inferenceStub(creds);
      const err = await grpcGenerate(stub, "tls-refused").then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      stub.close();
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      refused++;
    }
    expect(refused).toBe(2);
  });

  it("closes a connection that never starts its handshake, and one that sends nothing after it (HTTP/1.1, HTTP/2)", async () => {
    const silent = net.connect(service.port, "127.0.0.1");
    silent.on("error", () => {});
    await once(silent, "close"); // (never closed: the test times out)
    let checked = 0;
    for (const ALPNProtocols of [["http/1.1"], ["h2"]]) {
      const secure = tls.connect({ host: "127.0.0.1", port: service.port, ca, servername: "localhost", ALPNProtocols });
      secure.on("error", () => {});
      secure.resume(); // read what the service sends (HTTP/2: its SETTINGS, then GOAWAY), or the end is never seen
      await once(secure, "secureConnect");
      expect(secure.alpnProtocol).toBe(ALPNProtocols[0]);
      await once(secure, "close");
      checked++;
    }
    expect(checked).toBe(2);
  });

  it("logs the prompt when TWIG_LOG_PROMPTS opts in", async () => {
    const [line] = await requestLogLines(service.output, "tls-grpc-1");
    expect(line).toMatchObject({ requestId: "tls-grpc-1", tenant: "tls-tenant", code: "OK" });
    expect(line.prompt).toContain(PROMPT);
  });
});
