#!/usr/bin/env node
// The container health check: asks the GPU service in this container for its
// grpc.health.v1.Health status and exits 0 only when the answer is SERVING.
// It speaks the Connect protocol (one JSON POST over HTTP/1.1) to the same
// handler that serves gRPC, so it needs nothing but Node: no gRPC binary is
// vendored into the image, and it starts in tens of milliseconds.
//
//   node gpu-service/src/health-probe.mjs [--service NAME] [--port N] [--timeout MS]
//
// --service: "" (default) is the whole service (NOT_SERVING until every model
// is loaded, and again while draining); a model's name asks about that model.
// The port defaults to TWIG_GPU_PORT (else 50651). With TWIG_TLS_CERT set, the
// service speaks TLS and so does the probe: it talks to 127.0.0.1, whose name
// no certificate carries, so it does not verify the certificate; it sends no
// credential (Health is open) and reads one status word. Exit codes: 0
// SERVING, 1 any other status or an unknown service, 2 no answer (refused,
// timed out, not the Health service), 3 bad arguments.
import http from "node:http";
import https from "node:https";
import { parseArgs } from "node:util";

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      service: { type: "string", default: "" },
      port: { type: "string", default: process.env.TWIG_GPU_PORT || "50651" },
      timeout: { type: "string", default: "3000" },
    },
  }));
} catch (err) {
  console.error(`health-probe: ${err.message}`);
  process.exit(3);
}
const port = Number(args.port);
const timeout = Number(args.timeout);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !(timeout > 0)) {
  console.error(`health-probe: --port must be 1-65535 and --timeout a positive number of ms`);
  process.exit(3);
}

const tls = Boolean(process.env.TWIG_TLS_CERT);
const body = JSON.stringify({ service: args.service });
const request = (tls ? https : http).request(
  {
    host: "127.0.0.1",
    port,
    method: "POST",
    path: "/grpc.health.v1.Health/Check",
    headers: { "content-type": "application/json", "connect-protocol-version": "1" },
    timeout,
    ...(tls ? { rejectUnauthorized: false } : {}),
  },
  (res) => {
    let text = "";
    res.setEncoding("utf8");
    res.on("data", (chunk) => {
      text += chunk;
    });
    res.on("end", () => {
      let answer;
      try {
        answer = JSON.parse(text);
      } catch {
        answer = undefined;
      }
      const what = args.service === "" ? "the service" : `"${args.service}"`;
      if (res.statusCode === 200 && typeof answer?.status === "string") {
        console.log(`${what}: ${answer.status}`);
        process.exit(answer.status === "SERVING" ? 0 : 1);
      }
      if (answer?.code === "not_found") {
        console.log(`${what}: unknown to the service`);
        process.exit(1);
      }
      console.error(`health-probe: HTTP ${res.statusCode} from 127.0.0.1:${port}: ${text.slice(0, 200)}`);
      process.exit(2);
    });
  },
);
request.on("timeout", () => request.destroy(new Error(`no answer within ${timeout} ms`)));
request.on("error", (err) => {
  console.error(`health-probe: 127.0.0.1:${port}: ${err.message}`);
  process.exit(2);
});
request.end(body);
