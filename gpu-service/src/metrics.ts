/**
 * Prometheus metrics, served on their own port (`/metrics`). The inference
 * service records each request here; nothing in the engine knows about them.
 */
import http from "node:http";
import client from "prom-client";

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const labelNames = ["model"] as const;
export const metrics = {
  ttft: new client.Histogram({
    name: "twig_time_to_first_token_seconds",
    help: "Time from request to first token",
    labelNames,
    buckets,
    registers: [registry],
  }),
  interToken: new client.Histogram({
    name: "twig_inter_token_latency_seconds",
    help: "Time between streamed deltas",
    labelNames,
    buckets,
    registers: [registry],
  }),
  e2e: new client.Histogram({
    name: "twig_request_duration_seconds",
    help: "End-to-end request time",
    labelNames,
    buckets,
    registers: [registry],
  }),
  queue: new client.Histogram({
    name: "twig_queue_time_seconds",
    help: "Time waiting for an engine worker",
    labelNames,
    buckets,
    registers: [registry],
  }),
  queueDepth: new client.Gauge({
    name: "twig_queue_depth",
    help: "Requests waiting for a worker",
    labelNames,
    registers: [registry],
  }),
  running: new client.Gauge({
    name: "twig_running_requests",
    help: "Requests being generated",
    labelNames,
    registers: [registry],
  }),
  promptTokens: new client.Counter({
    name: "twig_prompt_tokens_total",
    help: "Prompt tokens (image expanded)",
    labelNames,
    registers: [registry],
  }),
  generatedTokens: new client.Counter({
    name: "twig_generated_tokens_total",
    help: "Generated tokens",
    labelNames,
    registers: [registry],
  }),
  draftedTokens: new client.Counter({
    name: "twig_drafted_tokens_total",
    help: "Tokens drafted by the twig",
    labelNames,
    registers: [registry],
  }),
  acceptedTokens: new client.Counter({
    name: "twig_accepted_tokens_total",
    help: "Drafted tokens accepted by the full model",
    labelNames,
    registers: [registry],
  }),
  visualKept: new client.Counter({
    name: "twig_visual_tokens_kept_total",
    help: "Visual tokens kept by pruning",
    labelNames,
    registers: [registry],
  }),
  visualPruned: new client.Counter({
    name: "twig_visual_tokens_pruned_total",
    help: "Visual tokens pruned",
    labelNames,
    registers: [registry],
  }),
  errors: new client.Counter({
    name: "twig_request_errors_total",
    help: "Failed requests by gRPC code",
    labelNames: ["model", "code"] as const,
    registers: [registry],
  }),
};

/** Serves /metrics on host:port; resolves with the bound port. */
export function serveMetrics(host: string, port: number): Promise<{ port: number; close: () => void }> {
  const server = http.createServer(async (req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": registry.contentType }).end(await registry.metrics());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const addr = server.address();
      resolve({ port: typeof addr === "object" && addr ? addr.port : port, close: () => server.close() });
    });
  });
}
