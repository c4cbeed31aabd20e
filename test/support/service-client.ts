/**
 * A small Connect client for service tests: runs one Generate call and
 * records what came back (events with their arrival times, or the error code),
 * and reads one gauge of the Prometheus endpoint; and a grpc-js stub.
 */
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { repoRoot } from "./gpu-service.js";

/**
 * A plain @grpc/grpc-js stub of twigvlm.v1.InferenceService on a loopback
 * `port` (real gRPC over HTTP/2), its types loaded from the .proto at run time:
 * enums and 64-bit integers as strings, unset fields filled with defaults.
 */
// biome-ignore lint/suspicious/noExplicitAny: grpc-js builds its stubs at run time
export function grpcInferenceStub(port: number, creds = grpc.credentials.createInsecure()): any {
  const def = protoLoader.loadSync("twigvlm/v1/inference.proto", {
    includeDirs: [join(repoRoot, "proto")],
    enums: String,
    longs: String,
    defaults: true,
  });
  // biome-ignore lint/suspicious/noExplicitAny: run-time stubs
  const pkg = grpc.loadPackageDefinition(def) as any;
  return new pkg.twigvlm.v1.InferenceService(`127.0.0.1:${port}`, creds);
}

/** One greedy Generate as a grpc-js stub sends it (enums by name, as the stub takes them). */
export interface GrpcAsk {
  model: string;
  image: Uint8Array;
  question: string;
  /** "MODE_TWIG", "MODE_BASE", ... */
  mode: string;
  retainBudget?: number;
  maxTokens: number;
  deadlineMs?: number;
  tenantId?: string;
  requestId?: string;
}

/**
 * Runs one greedy Generate on a grpc-js stub (grpcInferenceStub) to its end: the token ids it
 * streamed and the gRPC status it ended with (0: OK). `cancelAfterDeltas` cancels the call after
 * that many deltas; `onStarted` hears its Started event.
 */
export function grpcGenerate(
  // biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
  stub: any,
  ask: GrpcAsk,
  opts: { cancelAfterDeltas?: number; onStarted?: () => void } = {},
): Promise<{ ids: string[]; code: number }> {
  return new Promise((resolve) => {
    const ids: string[] = [];
    let deltas = 0;
    const call = stub.generate({
      model: ask.model,
      tenantId: ask.tenantId ?? "",
      requestId: ask.requestId ?? "",
      image: { data: ask.image },
      conversation: { messages: [{ role: "user", content: ask.question }] },
      sampling: { maxTokens: ask.maxTokens, temperature: 0 },
      acceleration: { mode: ask.mode, retainBudget: ask.retainBudget ?? 0 },
      deadlineMs: ask.deadlineMs ?? 0,
    });
    // biome-ignore lint/suspicious/noExplicitAny: grpc-js answers plain objects
    call.on("data", (ev: any) => {
      if (ev.started) opts.onStarted?.();
      if (!ev.delta) return;
      ids.push(...ev.delta.tokenIds.map(String));
      if (++deltas === opts.cancelAfterDeltas) call.cancel();
    });
    call.on("end", () => resolve({ ids, code: 0 }));
    call.on("error", (err: { code: number }) => resolve({ ids, code: err.code }));
  });
}

export type RequestInit = Partial<MessageInitShape<typeof GenerateRequestSchema>>;

export interface CallResult {
  /** "OK" when a Finished event arrived. */
  code: Code | "OK";
  message: string;
  /** performance.now() when the call was sent, its Started event and its end arrived. */
  sentAt: number;
  startedAt?: number;
  endedAt: number;
  deltas: number;
  /** Finished.stats.queue_ms (ms the service kept it waiting for a worker). */
  queueMs?: number;
  completionTokens?: number;
  decodeMs?: number;
}

/** A client of the service on `port` (with `authorization: Bearer <token>` when a token is given). */
export function serviceClient(port: number, image: Uint8Array, token?: string) {
  const bearer: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const client = createClient(
    InferenceService,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer] }),
  );
  const request = (over: RequestInit = {}) =>
    create(GenerateRequestSchema, {
      model: "tiny",
      tenantId: "t",
      image: { source: { case: "data", value: image } },
      input: { case: "conversation", value: { messages: [{ role: "user", content: "describe the picture" }] } },
      sampling: { maxTokens: 120 },
      acceleration: { mode: Mode.BASE },
      ...over,
    } as MessageInitShape<typeof GenerateRequestSchema>);

  /** Runs one call; `onEvent` may abort it through `signal`. */
  async function call(
    over: RequestInit = {},
    opts: { signal?: AbortSignal; onStarted?: () => void; onDelta?: (n: number) => void } = {},
  ): Promise<CallResult> {
    const r: CallResult = { code: Code.Unknown, message: "", sentAt: performance.now(), endedAt: 0, deltas: 0 };
    try {
      for await (const ev of client.generate(request(over), { signal: opts.signal })) {
        if (ev.event.case === "started") {
          r.startedAt = performance.now();
          opts.onStarted?.();
        } else if (ev.event.case === "delta") {
          r.deltas++; // not inside the optional call below: `f?.(++x)` skips the increment when f is absent
          opts.onDelta?.(r.deltas);
        } else if (ev.event.case === "finished") {
          r.code = "OK";
          r.queueMs = ev.event.value.stats?.queueMs;
          r.decodeMs = ev.event.value.stats?.decodeMs;
          r.completionTokens = ev.event.value.usage?.completionTokens;
        }
      }
    } catch (err) {
      const e = ConnectError.from(err);
      r.code = e.code;
      r.message = e.rawMessage;
    }
    r.endedAt = performance.now();
    return r;
  }
  return { call, request };
}

/** The value of a metric line such as `twig_queue_depth{model="tiny"}`. */
export async function readMetric(metricsUrl: string, series: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

/** The values of several metric lines at one scrape (NaN for a line that is absent). */
export async function readMetrics(metricsUrl: string, series: readonly string[]): Promise<number[]> {
  const lines = (await (await fetch(metricsUrl)).text()).split("\n");
  return series.map((name) => {
    const line = lines.find((l) => l.startsWith(`${name} `));
    return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
  });
}

/**
 * Scrapes `series` over and over until `done` settles; resolves with every scrape's values (one
 * array per scrape, in the order of `series`), so that a test can check each one and their peaks.
 */
export async function sampleMetrics(metricsUrl: string, series: readonly string[], done: Promise<unknown>) {
  let over = false;
  const settled = done.then(
    () => {
      over = true;
    },
    () => {
      over = true;
    },
  );
  const samples: number[][] = [];
  while (!over) {
    samples.push(await readMetrics(metricsUrl, series));
    await Promise.race([settled, new Promise((r) => setTimeout(r, 5))]);
  }
  return samples;
}

/** Polls until `ok(value)` or the time runs out; returns the last value read. */
export async function waitForMetric(
  metricsUrl: string,
  series: string,
  ok: (v: number) => boolean,
  timeoutMs = 10_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const v = await readMetric(metricsUrl, series);
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 2));
  }
}

export const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
