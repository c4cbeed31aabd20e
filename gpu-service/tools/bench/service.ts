/**
 * `npm run bench -- service`: the real GPU service process on a model
 * directory (default: a tiny random model written to a temporary directory),
 * called over loopback by 1, 2, 4 and 8 concurrent streams. Prints throughput
 * and latency percentiles (time to first token, inter-token, end to end), then
 * the service's cost per token against the in-process engine (LocalEngine) on
 * the same requests, one after the other, as a table with ratios.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  GenerateRequestSchema,
  InferenceService,
  Mode as ProtoMode,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { LocalEngine } from "../../src/engine/local-engine.js";
import type { Mode } from "../../src/engine/plan.js";
import { writeTinyModel } from "../make-tiny/tiny-model.js";
import { startServiceProcess } from "./service-process.js";
import { percentile as pct, type Timing, timedGenerate } from "./timed-generate.js";

export interface ServiceBenchArgs {
  /** Model directory; undefined = a tiny random model. */
  model?: string;
  workers: number;
  threads: number;
  /** Requests each stream sends, one after another. */
  perStream: number;
  maxTokens: number;
  transport: "connect" | "grpc";
}

const LEVELS = [1, 2, 4, 8];
const QUESTIONS = ["describe the picture", "what colour is the circle ?", "how many shapes are there ?"];

const triple = (xs: number[], digits = 1) => [50, 90, 99].map((p) => pct(xs, p).toFixed(digits)).join(" / ");

export async function benchService(args: ServiceBenchArgs): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), "twigserve-bench-"));
  const modelDir = args.model ? resolve(args.model) : join(scratch, "tiny-model");
  if (!args.model) writeTinyModel(modelDir, 6, "hf");
  // the service serves every sub-directory of its models directory: give it just this one, as "bench"
  const modelsDir = join(scratch, "models");
  mkdirSync(modelsDir);
  symlinkSync(modelDir, join(modelsDir, "bench"));

  const image = await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: 200, g: 60, b: 30 } } })
    .png()
    .toBuffer();
  // the LocalEngine is loaded first only to learn whether the model has a twig
  const local = await LocalEngine.load(modelDir, { threads: args.threads });
  const modes: Mode[] = local.info.twig ? ["base", "twig"] : ["base"];

  const { port, child } = await startServiceProcess(modelsDir, {
    TWIG_ENGINE_WORKERS: String(args.workers),
    TWIG_ENGINE_THREADS: String(args.threads),
    TWIG_MAX_QUEUE: "1000",
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const transport: Transport =
    args.transport === "grpc"
      ? createGrpcTransport({ baseUrl })
      : createConnectTransport({ baseUrl, httpVersion: "1.1" });
  const client = createClient(InferenceService, transport);

  const callService = (question: string, mode: Mode): Promise<Timing> => {
    const req = create(GenerateRequestSchema, {
      model: "bench",
      tenantId: "bench",
      image: { source: { case: "data", value: image } },
      input: { case: "conversation", value: { messages: [{ role: "user", content: question }] } },
      sampling: { maxTokens: args.maxTokens },
      acceleration: { mode: mode === "twig" ? ProtoMode.TWIG : ProtoMode.BASE },
    });
    return timedGenerate(client, req);
  };

  const name = args.model ? basename(modelDir) : "tiny random model";
  console.log(
    `bench service: ${name}, ${args.workers} engine worker(s) x ${args.threads} thread(s), up to ${args.maxTokens} tokens per request (greedy), ` +
      `${args.perStream} requests per stream, ${args.transport === "grpc" ? "gRPC over HTTP/2" : "Connect over HTTP/1.1"}, mode ${modes.join(" + ")} alternating`,
  );
  try {
    for (let i = 0; i < 2; i++) await callService(QUESTIONS[0], modes[i % modes.length]); // warm up

    console.log(
      "\n  streams  requests  tokens   tok/s    TTFT ms p50/p90/p99     inter-token ms p50/p90/p99   end-to-end ms p50/p90/p99",
    );
    for (const streams of LEVELS) {
      const timings: Timing[] = [];
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: streams }, async (_, s) => {
          for (let k = 0; k < args.perStream; k++) {
            const question = QUESTIONS[(s * args.perStream + k) % QUESTIONS.length];
            timings.push(await callService(question, modes[(s + k) % modes.length]));
          }
        }),
      );
      const wall = (performance.now() - t0) / 1000;
      const tokens = timings.reduce((a, t) => a + t.tokens, 0);
      console.log(
        `  ${String(streams).padStart(7)}  ${String(timings.length).padStart(8)}  ${String(tokens).padStart(6)}  ${(tokens / wall).toFixed(1).padStart(7)}   ` +
          `${triple(timings.map((t) => t.ttft)).padEnd(22)}  ${triple(
            timings.flatMap((t) => t.gaps),
            2,
          ).padEnd(27)}  ${triple(timings.map((t) => t.e2e))}`,
      );
    }

    // the same requests, one at a time, through the service and through the in-process engine
    console.log(
      "\n  per token, one request at a time (same requests, same outputs; median of 3, end to end including prefill)\n  mode   request                        tokens   in-process ms/tok   service ms/tok   ratio   overhead ms/tok",
    );
    const runLocal = async (question: string, mode: Mode) => {
      // planned as the service plans (it does so before timing starts too: the service's clock starts at the call)
      const t0 = performance.now();
      let tokens = 0;
      await local.generate(
        await local.plan({
          image,
          messages: [{ role: "user", content: question }],
          maxTokens: args.maxTokens,
          temperature: 0,
          topP: 1,
          stop: [],
          mode,
        }),
        (e) => {
          if (e.type === "delta") tokens += e.tokenIds.length;
        },
      );
      return { ms: performance.now() - t0, tokens };
    };
    for (const mode of modes) await runLocal(QUESTIONS[0], mode); // warm up
    for (const mode of modes) {
      for (const question of QUESTIONS) {
        // three runs each, alternating, median per token (the machine may be shared)
        const perLocal: number[] = [];
        const perService: number[] = [];
        let tokens = 0;
        let serviceTokens = 0;
        for (let rep = 0; rep < 3; rep++) {
          const viaService = await callService(question, mode);
          const viaLocal = await runLocal(question, mode);
          tokens = viaLocal.tokens;
          serviceTokens = viaService.tokens;
          perLocal.push(viaLocal.ms / Math.max(1, viaLocal.tokens));
          perService.push(viaService.e2e / Math.max(1, viaService.tokens));
        }
        const l = pct(perLocal, 50);
        const sv = pct(perService, 50);
        const same = tokens === serviceTokens ? "" : `  (token counts differ: ${tokens} vs ${serviceTokens})`;
        console.log(
          `  ${mode.padEnd(5)}  ${question.padEnd(29)}  ${String(tokens).padStart(6)}   ${l.toFixed(3).padStart(17)}   ${sv.toFixed(3).padStart(14)}   ${(sv / l).toFixed(2).padStart(5)}   ${(sv - l).toFixed(3).padStart(15)}${same}`,
        );
      }
    }
  } finally {
    child.kill("SIGTERM");
    await local.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
