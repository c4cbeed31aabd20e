/**
 * An engine worker killed mid-request, through the real service process (one
 * worker). The kill is the service's test-only fault injection
 * (TWIG_FAULT_EXIT_MARKER, accepted only with TWIG_ALLOW_FAULT_INJECTION=1):
 * the worker thread exits 20 ms after the third delta of a request whose
 * prompt holds the marker, while it still decodes. The stream ends UNAVAILABLE, Health (watched) goes
 * NOT_SERVING and back to SERVING, the next request is served by the new
 * worker, and the restart is counted. With TWIG_FAULT_ERROR_MARKER a request
 * fails with an internal error instead, which the caller sees only as a
 * generic message with its request id.
 */
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, startGpuService, startTinyModelService } from "../../support/gpu-service.js";
import { readMetric, serviceClient } from "../../support/service-client.js";
import { jsonLines, requestLogLines } from "../../support/service-logs.js";

const MARKER = "worker-exit-marker";
const ERROR_MARKER = "engine-error-marker";
let service: GpuServiceProcess & { modelDir: string };
let png: Buffer;

beforeAll(async () => {
  png = await sharp({ create: { width: 24, height: 20, channels: 3, background: { r: 30, g: 160, b: 60 } } })
    .png()
    .toBuffer();
  service = await startTinyModelService(
    0,
    8,
    {
      TWIG_ALLOW_FAULT_INJECTION: "1",
      TWIG_FAULT_EXIT_MARKER: MARKER,
      TWIG_FAULT_ERROR_MARKER: ERROR_MARKER,
      TWIG_ENGINE_WORKERS: "1",
    },
    { alwaysTiny: true },
  ); // the tiny random model answers at length whatever the prompt
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

/** Collects every status a Health.Watch stream on `name` reports until `until` says stop. */
function watch(name: string, until: (seen: Status[]) => boolean) {
  const seen: Status[] = [];
  const ctrl = new AbortController();
  const health = createClient(Health, createGrpcTransport({ baseUrl: service.url }));
  // resolves with what it saw, and how it ended ("done" when `until` was satisfied)
  const done = (async () => {
    try {
      for await (const u of health.watch({ service: name }, { signal: ctrl.signal })) {
        seen.push(u.status);
        if (until(seen)) return { seen, end: "done" };
      }
      return { seen, end: "the stream ended" };
    } catch (err) {
      return { seen, end: String(err) };
    }
  })();
  afterAll(() => ctrl.abort());
  return { seen, done };
}

/** Whether `seen` holds `pattern` in order (other statuses may come between). */
const inOrder = (seen: Status[], pattern: Status[]) => {
  let i = 0;
  for (const s of seen) if (s === pattern[i]) i++;
  return i === pattern.length;
};

describe("a worker that dies", () => {
  it("fails its stream UNAVAILABLE, Health goes NOT_SERVING and back, the next request is served", async () => {
    const cycle = [Status.SERVING, Status.NOT_SERVING, Status.SERVING];
    const whole = watch("", (seen) => inOrder(seen, cycle));
    const model = watch("tiny", (seen) => inOrder(seen, cycle));
    while (whole.seen.length === 0 || model.seen.length === 0) await new Promise((r) => setTimeout(r, 10));
    expect(await readMetric(service.metricsUrl, 'twig_engine_worker_restarts_total{model="tiny"}')).toBe(0);

    const client = serviceClient(service.port, png);
    const killed = await client.call({
      requestId: "killed-request",
      input: { case: "conversation", value: { messages: [{ role: "user", content: `describe ${MARKER}` }] } },
    });
    expect(killed.startedAt).toBeDefined(); // it was running
    expect(killed.deltas).toBeGreaterThanOrEqual(1); // and had streamed tokens
    expect(killed.code).toBe(Code.Unavailable);
    expect(killed.message).toMatch(/the engine worker exited \(code 70\) during the request; retry/);

    // Health went down and came back up, for the service and for the model
    expect(await whole.done).toEqual({ seen: expect.any(Array), end: "done" });
    expect(await model.done).toEqual({ seen: expect.any(Array), end: "done" });
    expect(inOrder(whole.seen, cycle) && inOrder(model.seen, cycle)).toBe(true);

    const next = await client.call({ sampling: { maxTokens: 4 } });
    expect(next.code).toBe("OK");
    expect(await readMetric(service.metricsUrl, 'twig_engine_worker_restarts_total{model="tiny"}')).toBe(1);
    expect(await readMetric(service.metricsUrl, 'twig_engine_workers{model="tiny"}')).toBe(1);
    const [killedLine] = await requestLogLines(service.output, "killed-request");
    expect(killedLine).toMatchObject({ code: "Unavailable" });
    const said = (pattern: RegExp) => jsonLines(service.output()).some((l) => pattern.test(String(l.msg)));
    expect(said(/engine worker of model tiny exited \(code 70\), crash 1 in a row; restarting in 500 ms/)).toBe(true);
    expect(said(/^gpu-service: engine worker of model tiny replaced$/)).toBe(true);
  });
});

describe("an internal error", () => {
  it("reaches the caller as a generic message with its request id; the details are in the log under that id", async () => {
    const client = serviceClient(service.port, png);
    const failed = await client.call({
      requestId: "internal-error-request",
      input: { case: "conversation", value: { messages: [{ role: "user", content: `describe ${ERROR_MARKER}` }] } },
    });
    expect(failed.deltas).toBeGreaterThanOrEqual(1);
    expect(failed.code).toBe(Code.Internal);
    expect(failed.message).toBe(
      "internal error; the service logged the details under request id internal-error-request",
    );
    // (the service writes the line as the call ends: wait for it to come through the pipe)
    const [line] = await requestLogLines(service.output, "internal-error-request");
    expect(line).toMatchObject({
      code: "Internal",
      level: 50,
      error: `generation failed: injected fault: engine state lost at ${service.modelDir}`,
    });
    // the worker survived its request's failure
    expect((await client.call({ sampling: { maxTokens: 2 } })).code).toBe("OK");
  });
});

describe("fault injection is for tests only", () => {
  it("refuses to start with a fault marker unless TWIG_ALLOW_FAULT_INJECTION=1", async () => {
    const err = await startGpuService(0, { TWIG_FAULT_EXIT_MARKER: "x" }).then(
      (s) => {
        void s.stop();
        return undefined;
      },
      (e) => (e as Error).message,
    );
    expect(err).toMatch(/exited with 2/);
    expect(err).toMatch(
      /TWIG_FAULT_EXIT_MARKER and TWIG_FAULT_ERROR_MARKER break engine workers on purpose, for tests/,
    );
  });
});
