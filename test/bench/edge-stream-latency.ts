/**
 * How long a token takes from the GPU service to a streaming HTTP client
 * through the edge. A pass-through proxy sits between the edge and the real GPU
 * service and notes the moment each Delta frame leaves the service; the client
 * notes the moment the matching SSE chunk arrives. Both clocks are this
 * process's performance.now(). For comparison, the same measurement for a
 * Connect client reading the service through the same proxy, without the edge.
 *
 *   npx tsx test/bench/edge-stream-latency.ts [--model-dir DIR] [--requests N] [--max-tokens N] [--paced MS]
 *
 * Without --model-dir it writes and serves a tiny random model. With --paced,
 * the scripted GPU service (test/support/scripted-gpu-service.ts) stands in for
 * the model and emits 40 deltas MS apart: the edge's own delay without an
 * engine competing for the CPU. Prints a table.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { writeTinyModel } from "../../gpu-service/src/engine/tiny-model.js";
import { devApiKey, startEdgeDev } from "../support/edge-dev.js";
import { type FrameProxy, startFrameProxy } from "../support/frame-proxy.js";
import { startGpuService } from "../support/gpu-service.js";
import { startScriptedGpuService } from "../support/scripted-gpu-service.js";

const { values: args } = parseArgs({
  options: {
    "model-dir": { type: "string" },
    requests: { type: "string", default: "5" },
    "max-tokens": { type: "string", default: "64" },
    paced: { type: "string" },
  },
});
const GPU_PORT = 27160;
const PROXY_PORT = 27165;
const EDGE_PORT = 27170;
const requests = Number(args.requests);
const maxTokens = Number(args["max-tokens"]);

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

interface Row {
  path: string;
  deltas: number;
  latencies: number[];
  streamMs: number[];
}

function pair(received: { text: string; at: number }[], emitted: FrameProxy["deltas"], row: Row): void {
  if (received.length !== emitted.length || received.some((r, i) => r.text !== emitted[i].text))
    throw new Error(`the ${received.length} received chunks do not match the ${emitted.length} emitted deltas`);
  row.deltas += received.length;
  row.latencies.push(...received.map((r, i) => r.at - emitted[i].at));
  if (received.length > 0) row.streamMs.push(emitted[emitted.length - 1].at - emitted[0].at);
}

async function main() {
  let scratch: string | undefined;
  let modelDir: string;
  if (args["model-dir"]) modelDir = resolve(args["model-dir"]);
  else {
    scratch = mkdtempSync(join(tmpdir(), "twigserve-bench-"));
    modelDir = join(scratch, "tiny");
    writeTinyModel(modelDir, 3, "hf");
  }
  const paced = args.paced === undefined ? undefined : Number(args.paced);
  const model = paced === undefined ? basename(modelDir) : "scripted";
  const png = await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: 220, g: 40, b: 40 } } })
    .png()
    .toBuffer();
  const gpu =
    paced === undefined
      ? await startGpuService(GPU_PORT, {
          TWIG_MODELS_DIR: dirname(modelDir),
          TWIG_DEFAULT_MODEL: model,
          TWIG_ENGINE_THREADS: "1",
        })
      : await startScriptedGpuService(GPU_PORT, { pacedIntervalMs: paced }).then((s) => ({ ...s, stop: s.close }));
  const proxy = await startFrameProxy(PROXY_PORT, gpu.url);
  const proxyUrl = proxy.url;
  const edge = await startEdgeDev(EDGE_PORT, {
    GPU_SERVICE_URL: gpu.url,
    MODEL_ROUTES: JSON.stringify({ [model]: [proxyUrl] }),
  });
  const question = paced === undefined ? "describe the picture" : "paced";
  try {
    const direct: Row = { path: "GPU service -> Connect client (no edge)", deltas: 0, latencies: [], streamMs: [] };
    const viaEdge: Row = {
      path: "GPU service -> edge (wrangler dev) -> SSE client",
      deltas: 0,
      latencies: [],
      streamMs: [],
    };
    const connect = createClient(InferenceService, createConnectTransport({ baseUrl: proxyUrl, httpVersion: "1.1" }));
    for (let r = 0; r < requests; r++) {
      proxy.reset();
      const got: { text: string; at: number }[] = [];
      for await (const ev of connect.generate(
        create(GenerateRequestSchema, {
          model,
          image: { source: { case: "data", value: png } },
          input: { case: "conversation", value: { messages: [{ role: "user", content: question }] } },
          sampling: { maxTokens, temperature: 0 },
        }),
      )) {
        if (ev.event.case === "delta" && ev.event.value.text)
          got.push({ text: ev.event.value.text, at: performance.now() });
      }
      pair(got, proxy.deltas, direct);

      proxy.reset();
      const res = await fetch(`${edge.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${devApiKey()}`, "content-type": "application/json" },
        body: JSON.stringify({
          model,
          stream: true,
          max_tokens: maxTokens,
          temperature: 0,
          messages: [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url: `data:image/png;base64,${png.toString("base64")}` } },
                { type: "text", text: question },
              ],
            },
          ],
        }),
      });
      const sse: { text: string; at: number }[] = [];
      let pending = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body as ReadableStream<Uint8Array>) {
        const at = performance.now();
        pending += decoder.decode(chunk, { stream: true });
        let end = pending.indexOf("\n\n");
        while (end >= 0) {
          const data = pending.slice("data: ".length, end);
          pending = pending.slice(end + 2);
          end = pending.indexOf("\n\n");
          if (data === "[DONE]") continue;
          const content = JSON.parse(data).choices?.[0]?.delta?.content;
          if (content) sse.push({ text: content, at });
        }
      }
      pair(sse, proxy.deltas, viaEdge);
    }
    const f = (x: number) => x.toFixed(2).padStart(8);
    const what = paced === undefined ? `model ${model}` : `scripted service, a delta every ${paced} ms`;
    console.log(
      `\n${what}, ${requests} requests of up to ${maxTokens} tokens, greedy; latency = client receipt - GPU service emission (ms)\n`,
    );
    console.log(`| path | deltas | p50 ms | p90 ms | max ms | mean stream length ms |`);
    console.log(`|---|---|---|---|---|---|`);
    for (const row of [direct, viaEdge]) {
      const mean = row.streamMs.reduce((a, b) => a + b, 0) / Math.max(1, row.streamMs.length);
      console.log(
        `| ${row.path} | ${row.deltas} | ${f(quantile(row.latencies, 0.5))} | ${f(quantile(row.latencies, 0.9))} | ${f(Math.max(...row.latencies))} | ${f(mean)} |`,
      );
    }
    const added = quantile(viaEdge.latencies, 0.5) - quantile(direct.latencies, 0.5);
    console.log(`\nthe edge adds ${added.toFixed(2)} ms at the median per token`);
  } finally {
    await edge.stop();
    await proxy.close();
    await gpu.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
