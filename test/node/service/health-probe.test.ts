/**
 * The container health probe (gpu-service/src/health-probe.mjs, the image's
 * HEALTHCHECK and the Kubernetes probe of TLS pods) against the real service:
 * SERVING is exit 0, the model's own status is asked by name, an unknown name
 * or a draining service is exit 1, no answer is exit 2, bad arguments exit 3;
 * over TLS when the service serves TLS (TWIG_TLS_CERT set, as in the container).
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, repoRoot, startTinyModelService } from "../../support/gpu-service.js";

const script = join(repoRoot, "gpu-service/src/health-probe.mjs");
let plain: GpuServiceProcess;
let tls: GpuServiceProcess;
let certDir: string;

interface ProbeResult {
  code: number;
  out: string;
}

/** Runs the probe as the container does; resolves with its exit code and output. */
function probe(args: string[], env: Record<string, string> = {}): Promise<ProbeResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [script, ...args],
      { env: { PATH: process.env.PATH ?? "", ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

beforeAll(async () => {
  certDir = mkdtempSync(join(tmpdir(), "twigserve-probe-tls-"));
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
      ...["-subj", "/CN=gpu.example", "-addext", "subjectAltName=DNS:gpu.example"],
      ...["-keyout", join(certDir, "key.pem"), "-out", join(certDir, "cert.pem")],
    ],
    { stdio: "ignore" },
  );
  [plain, tls] = await Promise.all([
    startTinyModelService(0, 6, { TWIG_DRAIN_GRACE_MS: "120000", TWIG_MAX_BATCH: "8" }, { alwaysTiny: true }),
    startTinyModelService(
      0,
      6,
      { TWIG_TLS_CERT: join(certDir, "cert.pem"), TWIG_TLS_KEY: join(certDir, "key.pem") },
      { alwaysTiny: true },
    ),
  ]);
}, 180_000);

afterAll(async () => {
  await Promise.all([plain?.stop(), tls?.stop()]);
  rmSync(certDir, { recursive: true, force: true });
});

describe("gpu-service/src/health-probe.mjs", () => {
  it("exits 0 for SERVING, for the service and its model, reading the port from TWIG_GPU_PORT", async () => {
    const whole = await probe([], { TWIG_GPU_PORT: String(plain.port) });
    expect(whole).toEqual({ code: 0, out: "the service: SERVING\n" });
    const model = await probe(["--service", "tiny", "--port", String(plain.port)]);
    expect(model).toEqual({ code: 0, out: '"tiny": SERVING\n' });
  });

  it("exits 1 for a service name the service does not know, 2 when nothing answers, 3 on bad arguments", async () => {
    const unknown = await probe(["--service", "no-such-model", "--port", String(plain.port)]);
    expect(unknown).toEqual({ code: 1, out: '"no-such-model": unknown to the service\n' });
    const port = await closedPort();
    const refused = await probe(["--port", String(port)]);
    expect(refused.code).toBe(2);
    expect(refused.out).toContain("ECONNREFUSED");
    expect((await probe(["--port", "http"])).code).toBe(3);
    expect((await probe(["--bogus"])).code).toBe(3);
  });

  it("speaks TLS when TWIG_TLS_CERT is set, as the service does", async () => {
    const port = String(tls.port);
    const env = { TWIG_TLS_CERT: join(certDir, "cert.pem") };
    expect(await probe(["--service", "tiny", "--port", port], env)).toEqual({ code: 0, out: '"tiny": SERVING\n' });
    // cleartext against the TLS port gets no Health answer
    expect((await probe(["--port", port])).code).toBe(2);
  });

  it("exits 1 while the service drains, with streams still in flight", async () => {
    const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 10, g: 90, b: 200 } } })
      .png()
      .toBuffer();
    const client = createClient(InferenceService, createConnectTransport({ baseUrl: plain.url, httpVersion: "1.1" }));
    const seen: ProbeResult[] = [];
    let signalled = false;
    let streaming = 0;
    // six long generations decoding together on one worker (TWIG_MAX_BATCH above): the drain lasts until
    // the last one ends, long enough for a probe. The signal waits for every stream's first delta: a
    // request still on its way to the service when the drain begins is refused, as it should be.
    const one = async () => {
      let last = "";
      let first = true;
      for await (const ev of client.generate({
        model: "tiny",
        image: { source: { case: "data", value: png } },
        input: { case: "conversation", value: { messages: [{ role: "user", content: "describe the picture" }] } },
        sampling: { maxTokens: 200 },
        acceleration: { mode: Mode.BASE },
      })) {
        last = ev.event.case ?? "";
        if (ev.event.case === "delta" && first) {
          first = false;
          streaming++;
        }
        if (streaming === 6 && !signalled) {
          signalled = true;
          plain.child.kill("SIGTERM");
          // asked until it sees the drain; if the service exited first (code 2), the check below fails
          while (seen.length < 100 && seen.at(-1)?.code !== 1 && seen.at(-1)?.code !== 2)
            seen.push(await probe(["--port", String(plain.port)]));
        }
      }
      return last;
    };
    const lasts = await Promise.all(Array.from({ length: 6 }, one));
    expect(lasts).toEqual(Array(6).fill("finished"));
    expect(seen.at(-1)).toEqual({ code: 1, out: "the service: NOT_SERVING\n" });
  });
});
