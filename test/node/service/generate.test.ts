import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  type GenerateRequest,
  GenerateRequestSchema,
  InferenceService,
  Mode,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keptTokensForBudget } from "../../../gpu-service/src/engine/decoding/budget.js";
import { type GpuServiceProcess, repoRoot, startTinyModelService } from "../../support/gpu-service.js";
import { grpcInferenceStub } from "../../support/service-client.js";
import { requestLogLines } from "../../support/service-logs.js";

const run = promisify(execFile);
const PROMPT = "what colour is the circle ?";

let service: GpuServiceProcess & { modelDir: string };
let png: Buffer;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js builds its stubs at run time
let grpcClient: any;
let connect: Client<typeof InferenceService>;

/** The served model's default R-bar and visual tokens (from ListModels, in beforeAll). */
let defaultBudget = 0;
let visualTokens = 0;

type RequestInit = Partial<MessageInitShape<typeof GenerateRequestSchema>>;
const request = (over: RequestInit = {}) =>
  create(GenerateRequestSchema, {
    model: "tiny",
    tenantId: "t1",
    image: { source: { case: "data", value: png } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: PROMPT }] } },
    sampling: { maxTokens: 16 },
    acceleration: { mode: Mode.TWIG, retainBudget: defaultBudget },
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
  // one request at a time: the CLI's lone decoding, its drafting statistics included (in a batch the
  // prompt's own pass gives the first token and drafting starts at the second; service/batching.test.ts)
  service = await startTinyModelService(0, 4, { TWIG_MAX_BATCH: "1" });
  connect = createClient(InferenceService, createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }));
  const info = (await connect.listModels({})).models[0];
  defaultBudget = info.defaultRetainBudget;
  visualTokens = info.visualTokens;
  grpcClient = grpcInferenceStub(service.port);
}, 120_000);

afterAll(async () => {
  grpcClient?.close();
  await service?.stop();
});

/** What the command line (`npm run twig -- generate`) answers for the same request, read from its --trace. */
async function cliAnswer(mode: "twig" | "base", retain?: number) {
  const dir = mkdtempSync(join(tmpdir(), "twigserve-cli-"));
  try {
    writeFileSync(join(dir, "image.png"), png);
    const args = [
      "--import",
      "tsx",
      join(repoRoot, "gpu-service/tools/cli/main.ts"),
      "generate",
      ...["--model", service.modelDir, "--image", join(dir, "image.png"), "--prompt", PROMPT],
      ...["--mode", mode, "--max-tokens", "16", "--threads", "1", "--trace", join(dir, "trace.json")],
      ...(retain ? ["--retain", String(retain)] : []),
    ];
    const { stdout } = await run(process.execPath, args, { cwd: repoRoot });
    const trace = JSON.parse(readFileSync(join(dir, "trace.json"), "utf8"));
    const summary = /drafted (\d+), accepted (\d+)/.exec(stdout);
    return {
      stdout,
      text: trace.text as string,
      kept: trace.keptVisualIndices as number[],
      outputTokens: (trace.outputIds as number[]).length,
      drafted: Number(summary?.[1]),
      accepted: Number(summary?.[2]),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// biome-ignore lint/suspicious/noExplicitAny: grpc-js stubs are built at run time and answer plain objects
type Plain = Record<string, any>;

function grpcEvents(req: Plain): Promise<Plain[]> {
  return new Promise((resolve, reject) => {
    const out: Plain[] = [];
    const call = grpcClient.generate(req);
    call.on("data", (d: Plain) => out.push(d));
    call.on("end", () => resolve(out));
    call.on("error", reject);
  });
}

describe("Generate over the real service", () => {
  for (const mode of ["twig", "base"] as const) {
    it(`streams the CLI's answer in ${mode} mode over Connect (HTTP/1.1) and grpc-js (HTTP/2), with kept indices and statistics`, async () => {
      // twig: an explicit retain budget, the model's default (6 for the tiny random model)
      const retain = mode === "twig" ? (await connect.listModels({})).models[0].defaultRetainBudget : undefined;
      const cli = await cliAnswer(mode, retain);
      expect(cli.text.length).toBeGreaterThan(0);
      expect(cli.stdout.startsWith(cli.text)).toBe(true);

      const wireMode = mode === "twig" ? Mode.TWIG : Mode.BASE;
      const viaConnect = await connectText(request({ acceleration: { mode: wireMode, retainBudget: retain } }));
      expect(viaConnect.kinds[0]).toBe("started");
      expect(viaConnect.kinds.at(-1)).toBe("finished");
      expect(viaConnect.text).toBe(cli.text);
      expect(viaConnect.kept).toEqual(cli.kept);
      expect(viaConnect.finished).toMatchObject({
        usage: { completionTokens: cli.outputTokens },
        stats: { visualTokensKept: cli.kept.length, draftedTokens: cli.drafted, acceptedTokens: cli.accepted },
      });

      const events = await grpcEvents({
        model: "tiny",
        image: { data: png },
        conversation: { messages: [{ role: "user", content: PROMPT }] },
        sampling: { maxTokens: 16 },
        acceleration: { mode: `MODE_${mode.toUpperCase()}`, retainBudget: retain ?? 0 },
      });
      expect(events[0].started.keptVisualIndices).toEqual(cli.kept);
      const text = events.map((e) => e.delta?.text ?? "").join("");
      expect(text).toBe(cli.text);
      const finished = events.at(-1)?.finished;
      expect(finished.usage.completionTokens).toBe(cli.outputTokens);
      expect(finished.stats).toMatchObject({ draftedTokens: cli.drafted, acceptedTokens: cli.accepted });
      if (mode === "twig") expect(finished.stats.verifications).toBeGreaterThan(0);
    }, 60_000);
  }

  it("writes one JSON log line per request with its id and tenant, and no prompt or image", async () => {
    const secret = "zebra";
    const got = await connectText(
      request({
        requestId: "log-probe-1",
        tenantId: "tenant-log",
        input: { case: "conversation", value: { messages: [{ role: "user", content: `is the ${secret} red ?` }] } },
      }),
    );
    expect(got.kinds.at(-1)).toBe("finished");
    const lines = await requestLogLines(service.output, "log-probe-1");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 30,
      msg: "generate",
      requestId: "log-probe-1",
      tenant: "tenant-log",
      model: "tiny",
      code: "OK",
      completionTokens: expect.any(Number),
      promptTokens: expect.any(Number),
      durationMs: expect.any(Number),
    });
    expect(lines[0]).not.toHaveProperty("prompt");
    expect(service.output()).not.toContain(secret);
    expect(service.output()).not.toContain(png.subarray(16, 40).toString("base64"));

    const bad = await connectText(request({ requestId: "log-probe-2", model: "nope" })).catch((e) => e);
    expect(ConnectError.from(bad).code).toBe(Code.InvalidArgument);
    const [refused] = await requestLogLines(service.output, "log-probe-2");
    expect(refused).toMatchObject({
      tenant: "t1",
      code: "InvalidArgument",
      error: expect.stringMatching(/unknown model/),
    });
  });

  it("serves every wire mode, visionzip included, each keeping the visual tokens it promises", async () => {
    const keepsAll = [Mode.BASE, Mode.SSD_ONLY];
    const info = (await connect.listModels({})).models[0];
    const modes = [Mode.TWIG, Mode.BASE, Mode.FASTV, Mode.RANDOM, Mode.SSD_ONLY, Mode.TTP_ONLY, Mode.VISIONZIP];
    let served = 0;
    for (const mode of modes) {
      const got = await connectText(
        request({ acceleration: { mode, retainBudget: defaultBudget }, sampling: { maxTokens: 3 } }),
      );
      expect(got.kinds.at(-1), Mode[mode]).toBe("finished");
      const r = keptTokensForBudget(defaultBudget, {
        visualTokens,
        numLayers: info.numLayers,
        k: info.twigK,
        finalWipeLayer: info.finalWipeLayer,
      });
      expect(got.kept, Mode[mode]).toHaveLength(keepsAll.includes(mode) ? visualTokens : r);
      served++;
    }
    expect(served).toBe(modes.length);
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
        /not a PNG, JPEG, WebP or GIF/,
      ],
      [{ sampling: { maxTokens: 100000 } }, /exceeds the context length/],
      [{ sampling: { maxTokens: 4, temperature: 5 } }, /temperature must be in/],
      [{ acceleration: { mode: 99 as Mode } }, /unknown mode/],
      [{ acceleration: { mode: Mode.TWIG, retainBudget: 500 } }, /retain_budget 500 is outside/],
      [{ input: { case: undefined } }, /conversation or prompt/],
    ];
    let refused = 0;
    for (const [over, message] of cases) {
      const err = await connectText(request(over)).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      expect(err?.code, String(message)).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toMatch(message);
      refused++;
    }
    expect(refused).toBe(cases.length);
  });

  it("exports Prometheus metrics for the requests it served and refused", async () => {
    const res = await fetch(service.metricsUrl).catch((e) => {
      throw new Error(`${e.cause}\n${service.output()}`);
    });
    const text = await res.text();
    const value = (line: RegExp) => Number(text.match(line)?.[1] ?? Number.NaN);
    expect(value(/^twig_generated_tokens_total\{model="tiny"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^twig_prompt_tokens_total\{model="tiny"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^twig_request_errors_total\{model="tiny",code="InvalidArgument"\} (\d+)/m)).toBeGreaterThanOrEqual(7);
    // an unknown model name is counted under "unknown", so callers cannot mint label values
    expect(value(/^twig_request_errors_total\{model="unknown",code="InvalidArgument"\} (\d+)/m)).toBeGreaterThanOrEqual(
      1,
    );
    expect(value(/^twig_time_to_first_token_seconds_count\{model="tiny"\} (\d+)/m)).toBeGreaterThan(0);
    expect(text).toMatch(/^twig_drafted_tokens_total\{model="tiny"\} \d+/m);
    expect(text).toMatch(/^twig_visual_tokens_pruned_total\{model="tiny"\} \d+/m);
    expect(text).toMatch(/^twig_queue_depth\{model="tiny"\} 0/m);
  });
});
