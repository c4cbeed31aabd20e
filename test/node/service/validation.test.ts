/**
 * Bad input against the real service process: each check of the list
 * answers INVALID_ARGUMENT with a message that names the problem (image limits
 * set through the environment), then several hundred malformed requests
 * (random fields, corrupt images, huge values) leave the service healthy and
 * able to serve a good request.
 */
import { randomBytes } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Health } from "@twigserve/proto/grpc/health/v1/health_pb.js";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blackPng } from "../../../gpu-service/tools/bench/hostile-requests.js";
import { type GpuServiceProcess, startTinyModelService } from "../../support/gpu-service.js";
import { requestLogLines } from "../../support/service-logs.js";

const MAX_IMAGE_BYTES = 60_000;
const MAX_IMAGE_PIXELS = 300 * 300;
let service: GpuServiceProcess & { modelDir: string };
let png: Buffer;
/** N of the served model (16 for the tiny random model). */
let visualTokens: number;
let transport: Transport;
let client: Client<typeof InferenceService>;

type RequestInit = Partial<MessageInitShape<typeof GenerateRequestSchema>>;
const request = (over: RequestInit = {}) =>
  create(GenerateRequestSchema, {
    model: "tiny",
    tenantId: "fuzz",
    image: { source: { case: "data", value: png } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: "what is in the picture ?" }] } },
    sampling: { maxTokens: 4 },
    acceleration: { mode: Mode.BASE },
    ...over,
  } as MessageInitShape<typeof GenerateRequestSchema>);

/** The code and message a request ends with ("OK" when it finished). */
async function outcome(req: ReturnType<typeof request>): Promise<{ code: Code | "OK"; message: string }> {
  try {
    let finished = false;
    for await (const ev of client.generate(req)) if (ev.event.case === "finished") finished = true;
    return { code: finished ? "OK" : Code.Unknown, message: "" };
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
}

/** A PNG of `side`x`side` random pixels (noise does not compress). */
function noisePng(side: number): Promise<Buffer> {
  return sharp(randomBytes(side * side * 3), { raw: { width: side, height: side, channels: 3 } })
    .png()
    .toBuffer();
}

beforeAll(async () => {
  png = await sharp({ create: { width: 24, height: 20, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toBuffer();
  service = await startTinyModelService(0, 5, {
    TWIG_MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES),
    TWIG_MAX_IMAGE_PIXELS: String(MAX_IMAGE_PIXELS),
  });
  transport = createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" });
  client = createClient(InferenceService, transport);
  visualTokens = (await client.listModels({})).models[0].visualTokens;
}, 120_000);
afterAll(async () => {
  await service?.stop();
});

describe("bad input gets INVALID_ARGUMENT", () => {
  it("names each problem of the issue's list", async () => {
    const big = await noisePng(200); // 40,000 pixels (allowed), about 120 KB (too many bytes)
    expect(big.length).toBeGreaterThan(MAX_IMAGE_BYTES);
    const wide = await sharp({ create: { width: 400, height: 300, channels: 3, background: "#808080" } })
      .png()
      .toBuffer(); // a few KB, 120,000 pixels
    expect(wide.length).toBeLessThan(MAX_IMAGE_BYTES);
    const truncated = (await noisePng(64)).subarray(0, 600);
    const longPrompt = Array.from({ length: 400 }, () => "red").join(" ");
    const cases: [string, RequestInit, RegExp][] = [
      ["unknown model", { model: "llava-nope" }, /unknown model "llava-nope"; available: tiny/],
      ["no image", { image: undefined }, /needs an image/],
      ["image by URI", { image: { source: { case: "uri", value: "https://example.com/a.png" } } }, /image.uri/],
      ["empty image", { image: { source: { case: "data", value: new Uint8Array() } } }, /empty/],
      [
        "not an image",
        { image: { source: { case: "data", value: new TextEncoder().encode("BM6, a bitmap, or just text") } } },
        /not a PNG, JPEG, WebP or GIF file/,
      ],
      [
        "a GIF signature on text",
        { image: { source: { case: "data", value: new TextEncoder().encode("GIF89a, or just text") } } },
        /could not be read/,
      ],
      ["a PNG that stops short", { image: { source: { case: "data", value: truncated } } }, /could not be decoded/],
      ["too many bytes", { image: { source: { case: "data", value: big } } }, /bytes; the limit is 60000/],
      ["too many pixels", { image: { source: { case: "data", value: wide } } }, /400x300 .* the limit is 90000/],
      [
        "a 4,000,000 x 4 PNG of a few KB",
        { image: { source: { case: "data", value: blackPng(4_000_000, 4) } } },
        /^the image is 4000000x4: its longest side may be at most 8192 pixels$/,
      ],
      [
        "an aspect ratio of 50:1",
        { image: { source: { case: "data", value: blackPng(2000, 40) } } },
        /^the image is 2000x40: its aspect ratio 50.0:1 is beyond the limit of 20:1$/,
      ],
      [
        "prompt longer than the context",
        { input: { case: "conversation", value: { messages: [{ role: "user", content: longPrompt }] } } },
        /the prompt is \d+ tokens .*the context length is \d+/,
      ],
      ["raw prompt without <image>", { input: { case: "prompt", value: "USER: hi ASSISTANT:" } }, /<image>/],
      ["max_tokens too large", { sampling: { maxTokens: 4_000_000_000 } }, /max_tokens 4000000000 exceeds/],
      ["temperature above 2", { sampling: { maxTokens: 4, temperature: 2.5 } }, /temperature must be in \[0, 2\]/],
      ["negative temperature", { sampling: { maxTokens: 4, temperature: -1 } }, /temperature must be in/],
      ["top_p above 1", { sampling: { maxTokens: 4, topP: 1.5 } }, /top_p must be in \(0, 1\]/],
      ["negative top_p", { sampling: { maxTokens: 4, topP: -0.1 } }, /top_p must be in/],
      ["unknown mode", { acceleration: { mode: 42 as Mode } }, /unknown mode 42/],
      [
        "budget larger than the visual tokens",
        { acceleration: { mode: Mode.TWIG, retainBudget: visualTokens + 1 } },
        new RegExp(`retain_budget ${visualTokens + 1} is outside .*${visualTokens} visual tokens`),
      ],
      ["draft length too large", { acceleration: { mode: Mode.TWIG, draftLength: 1000 } }, /draft_length/],
      [
        "unknown role",
        { input: { case: "conversation", value: { messages: [{ role: "robot", content: "hi" }] } } },
        /role must be/,
      ],
      ["no input", { input: { case: undefined } }, /conversation or prompt/],
    ];
    let checked = 0;
    for (const [what, over, message] of cases) {
      const got = await outcome(request(over));
      expect(got.code, what).toBe(Code.InvalidArgument);
      expect(got.message, what).toMatch(message);
      checked++;
    }
    expect(checked).toBe(cases.length);
  });

  it("refuses a 4,000,000 x 4 PNG from its header, before the request reaches a worker", async () => {
    const thin = blackPng(4_000_000, 4);
    expect(thin.length).toBeLessThan(50_000);
    const events: string[] = [];
    let error: ConnectError | undefined;
    try {
      const req = request({ requestId: "thin-png", image: { source: { case: "data", value: thin } } });
      for await (const ev of client.generate(req)) events.push(ev.event.case ?? "");
    } catch (err) {
      error = ConnectError.from(err);
    }
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe("the image is 4000000x4: its longest side may be at most 8192 pixels");
    expect(events).toEqual([]); // no Started: no worker saw it
    const [line] = await requestLogLines(service.output, "thin-png");
    expect(line).toMatchObject({ code: "InvalidArgument" });
    expect(line).not.toHaveProperty("promptTokens");
  });

  it("survives several hundred malformed requests, stays healthy and then serves a good one", async () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    const garbage = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));
    const realPng = await noisePng(48);
    // images that are wrong in a different way each: noise, a PNG signature on noise, a cut-off
    // PNG, a PNG with flipped bytes in its pixel data, a JPEG marker on noise
    const badImage = (): Uint8Array => {
      const kind = pick(["noise", "signature", "cut", "flipped", "jpeg"] as const);
      if (kind === "noise") return garbage(Math.floor(rnd() * 200));
      if (kind === "signature") return Buffer.concat([png.subarray(0, 8 + Math.floor(rnd() * 30)), garbage(50)]);
      if (kind === "cut") return realPng.subarray(0, 40 + Math.floor(rnd() * (realPng.length - 100)));
      if (kind === "jpeg") return Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), garbage(300)]);
      const copy = Buffer.from(realPng);
      for (let k = 0; k < 8; k++) copy[100 + Math.floor(rnd() * (copy.length - 120))] ^= 0xff;
      return copy;
    };
    const huge = [4294967295, 2147483648, 1e9, 65536];
    // one field that is surely wrong, the rest random (maybe right, maybe not)
    const wrong: (() => RequestInit)[] = [
      () => ({ image: { source: { case: "data", value: badImage() } } }),
      () => ({ sampling: { maxTokens: pick(huge) } }),
      () => ({
        sampling: { maxTokens: 2, temperature: pick([2.01, 1e30, -0.5, Number.NaN, Number.POSITIVE_INFINITY]) },
      }),
      () => ({ sampling: { maxTokens: 2, topP: pick([1.0001, 7, -1, Number.NaN]) } }),
      () => ({ acceleration: { mode: 8 + Math.floor(rnd() * 1000) } }),
      () => ({ acceleration: { mode: Mode.TWIG, retainBudget: visualTokens + 1 + Math.floor(rnd() * 1e6) } }),
      () => ({ acceleration: { mode: Mode.TWIG, draftLength: 17 + Math.floor(rnd() * 1e6) } }),
      () => ({ model: String.fromCharCode(...garbage(1 + Math.floor(rnd() * 20)).map((b) => 33 + (b % 90))) }),
      () => ({ input: { case: "prompt", value: String.fromCharCode(...garbage(Math.floor(rnd() * 50))) } }),
      () => ({
        input: {
          case: "conversation",
          value: { messages: [{ role: pick(["", "admin", "USER", "tool"]), content: "hello" }] },
        },
      }),
      () => ({ input: { case: "conversation", value: { messages: [] } } }),
      () => ({ sampling: { maxTokens: 2, stop: Array.from({ length: 9 + Math.floor(rnd() * 50) }, () => "x") } }),
      () => ({
        input: {
          case: "conversation",
          value: { messages: [{ role: "user", content: Array.from({ length: 1000 }, () => "blue").join(" ") }] },
        },
      }),
    ];
    const randomFields = (): RequestInit => ({
      tenantId: pick(["fuzz", "", "t-2"]),
      sampling: { maxTokens: Math.floor(rnd() * 3) + 1, temperature: rnd() * 2, topP: 0.1 + rnd() * 0.9 },
      acceleration: { mode: pick([Mode.UNSPECIFIED, Mode.BASE, Mode.TWIG, Mode.TTP_ONLY]) },
    });
    const counts = new Map<string, number>();
    const N = 300;
    for (let i = 0; i < N; i++) {
      const w = Math.floor(rnd() * wrong.length);
      const base = randomFields();
      const bad = wrong[w]();
      const req = request({
        ...base,
        ...bad,
        sampling: { ...base.sampling, ...bad.sampling },
        acceleration: { ...base.acceleration, ...bad.acceleration },
      } as RequestInit);
      const got = await outcome(req);
      const key = got.code === Code.InvalidArgument ? "InvalidArgument" : `#${w} ${String(got.code)} ${got.message}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    expect(Object.fromEntries(counts)).toEqual({ InvalidArgument: N });
    const health = await createClient(Health, transport).check({ service: "" });
    expect(health.status).toBe(1); // SERVING
    expect(service.child.exitCode).toBeNull();
    expect(await outcome(request())).toEqual({ code: "OK", message: "" });
  }, 120_000);
});
