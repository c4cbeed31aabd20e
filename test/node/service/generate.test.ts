import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import {
  type GenerateRequest,
  GenerateRequestSchema,
  InferenceService,
  Mode,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";
import { type GpuServiceProcess, repoRoot, startTinyModelService } from "../../support/gpu-service.js";

const PORT = 47331;
let service: GpuServiceProcess & { modelDir: string };
let png: Buffer;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js builds its stubs at run time
let grpcClient: any;
const connect = createClient(
  InferenceService,
  createConnectTransport({ baseUrl: `http://127.0.0.1:${PORT}`, httpVersion: "1.1" }),
);

type RequestInit = Partial<MessageInitShape<typeof GenerateRequestSchema>>;
const request = (over: RequestInit = {}) =>
  create(GenerateRequestSchema, {
    model: "tiny",
    tenantId: "t1",
    image: { source: { case: "data", value: png } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: "what colour is the circle ?" }] } },
    sampling: { maxTokens: 16 },
    acceleration: { mode: Mode.TWIG, retainBudget: 6 },
    ...over,
  } as MessageInitShape<typeof GenerateRequestSchema>);

async function connectText(req: GenerateRequest) {
  let text = "";
  const kinds: string[] = [];
  let kept: number[] = [];
  let finished: unknown;
  for await (const ev of connect.generate(req)) {
    kinds.push(ev.event.case ?? "none");
    if (ev.event.case === "delta") text += ev.event.value.text;
    if (ev.event.case === "started") kept = ev.event.value.keptVisualIndices;
    if (ev.event.case === "finished") finished = ev.event.value;
  }
  return { text, kinds, kept, finished };
}

beforeAll(async () => {
  png = await sharp({ create: { width: 24, height: 20, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toBuffer();
  service = await startTinyModelService(PORT, 4);
  const def = protoLoader.loadSync("twigvlm/v1/inference.proto", {
    includeDirs: [join(repoRoot, "proto")],
    enums: String,
    longs: String,
  });
  // biome-ignore lint/suspicious/noExplicitAny: run-time stubs
  const pkg = grpc.loadPackageDefinition(def) as any;
  grpcClient = new pkg.twigvlm.v1.InferenceService(`127.0.0.1:${PORT}`, grpc.credentials.createInsecure());
}, 120_000);

afterAll(async () => {
  grpcClient?.close();
  await service?.stop();
});

describe("Generate over the real service", () => {
  it("streams Started, Deltas and Finished over Connect, with the in-process engine's text", async () => {
    const got = await connectText(request());
    expect(got.kinds[0]).toBe("started");
    expect(got.kinds.at(-1)).toBe("finished");
    expect(got.kept.length).toBeGreaterThan(0);
    expect(got.finished).toMatchObject({
      usage: { completionTokens: expect.any(Number) },
      stats: { visualTokens: 16 },
    });
    const engine = await LocalEngine.load(service.modelDir, { threads: 1 });
    let text = "";
    await engine.generate(
      {
        image: png,
        messages: [{ role: "user", content: "what colour is the circle ?" }],
        maxTokens: 16,
        temperature: 0,
        topP: 1,
        stop: [],
        mode: "twig",
        retainBudget: 6,
      },
      (e) => {
        if (e.type === "delta") text += e.text;
      },
    );
    await engine.close();
    expect(got.text).toBe(text);
  });

  it("streams the same text to a plain grpc-js client over HTTP/2", async () => {
    const viaConnect = await connectText(request({ acceleration: { mode: Mode.BASE } }));
    const events: Record<string, unknown>[] = await new Promise((resolve, reject) => {
      const out: Record<string, unknown>[] = [];
      const call = grpcClient.generate({
        model: "tiny",
        image: { data: png },
        conversation: { messages: [{ role: "user", content: "what colour is the circle ?" }] },
        sampling: { maxTokens: 16 },
        acceleration: { mode: "MODE_BASE" },
      });
      call.on("data", (d: Record<string, unknown>) => out.push(d));
      call.on("end", () => resolve(out));
      call.on("error", reject);
    });
    const text = events.map((e) => (e.delta as { text?: string } | undefined)?.text ?? "").join("");
    expect(text).toBe(viaConnect.text);
    expect(events.at(-1)).toHaveProperty("finished");
  });

  it("serves every wire mode, visionzip included, each keeping the visual tokens it promises", async () => {
    const keepsAll = [Mode.BASE, Mode.SSD_ONLY];
    for (const mode of [Mode.TWIG, Mode.BASE, Mode.FASTV, Mode.RANDOM, Mode.SSD_ONLY, Mode.TTP_ONLY, Mode.VISIONZIP]) {
      const got = await connectText(request({ acceleration: { mode, retainBudget: 6 }, sampling: { maxTokens: 3 } }));
      expect(got.kinds.at(-1), Mode[mode]).toBe("finished");
      expect(got.kept, Mode[mode]).toHaveLength(keepsAll.includes(mode) ? 16 : 4);
    }
  });

  it("answers bad requests with INVALID_ARGUMENT and a message that says what is wrong", async () => {
    const cases: [RequestInit, RegExp][] = [
      [{ model: "nope" }, /unknown model "nope"/],
      [{ image: undefined }, /needs an image/],
      [
        {
          image: {
            source: { case: "data", value: new TextEncoder().encode("not an image") },
          },
        },
        /not a PNG, JPEG or WebP/,
      ],
      [{ sampling: { maxTokens: 100000 } }, /exceeds the context length/],
      [{ sampling: { maxTokens: 4, temperature: 5 } }, /temperature must be in/],
      [{ acceleration: { mode: 99 as Mode } }, /unknown mode/],
      [{ acceleration: { mode: Mode.TWIG, retainBudget: 500 } }, /retain_budget 500 is outside/],
      [{ input: { case: undefined } }, /conversation or prompt/],
    ];
    for (const [over, message] of cases) {
      const err = await connectText(request(over)).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      expect(err?.code, String(message)).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toMatch(message);
    }
  });

  it("survives several hundred malformed requests and then serves a good one", async () => {
    let seed = 1;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const codes = new Map<Code, number>();
    for (let i = 0; i < 300; i++) {
      const bytes = new Uint8Array(Math.floor(rnd() * 64));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rnd() * 256);
      if (rnd() < 0.3) bytes.set(png.subarray(0, Math.min(bytes.length, 12))); // a PNG signature on garbage
      const req = request({
        image: { source: { case: "data", value: bytes } },
        sampling: {
          maxTokens: Math.floor(rnd() * 3) + 1,
          temperature: rnd() * 3,
          topP: rnd() * 1.5,
        },
        acceleration: {
          mode: Math.floor(rnd() * 9),
          retainBudget: Math.floor(rnd() * 40),
        },
      });
      const code = await connectText(req).then(
        () => Code.Unknown,
        (e) => ConnectError.from(e).code,
      );
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    expect([...codes.keys()]).toEqual([Code.InvalidArgument]);
    const good = await connectText(request());
    expect(good.kinds.at(-1)).toBe("finished");
  }, 120_000);

  it("exports Prometheus metrics for the requests it served and refused", async () => {
    const text = await (await fetch(`http://127.0.0.1:${PORT + 1}/metrics`)).text();
    const value = (line: RegExp) => Number(text.match(line)?.[1] ?? Number.NaN);
    expect(value(/^twig_generated_tokens_total\{model="tiny"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^twig_prompt_tokens_total\{model="tiny"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^twig_request_errors_total\{model="tiny",code="InvalidArgument"\} (\d+)/m)).toBeGreaterThanOrEqual(
      300,
    );
    expect(value(/^twig_time_to_first_token_seconds_count\{model="tiny"\} (\d+)/m)).toBeGreaterThan(0);
    expect(text).toMatch(/^twig_drafted_tokens_total\{model="tiny"\} \d+/m);
    expect(text).toMatch(/^twig_visual_tokens_pruned_total\{model="tiny"\} \d+/m);
    expect(text).toMatch(/^twig_queue_depth\{model="tiny"\} 0/m);
  });
});
