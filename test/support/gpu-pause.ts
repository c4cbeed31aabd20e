/**
 * Freezing the real GPU service process mid-answer (SIGSTOP, then SIGCONT),
 * so that a test can act while a generation is certainly still running: the
 * demo model ends an answer within a second, too soon to race against. Paired
 * with a frame proxy, the freeze lands at the first delta of an answer.
 *
 * Tests inside workerd cannot signal processes, so `startGpuControl` serves
 * the same over HTTP on loopback: POST /pause-at-next-first-delta, POST
 * /resume, GET /state ({paused, proxyCancelled}) and GET /log?requestId=ID
 * (the service's "generate" log lines of that request); and GET /hanging, what
 * a hanging shard (hanging-server.ts) saw.
 */
import http from "node:http";
import type { FrameProxy } from "./frame-proxy.js";
import type { GpuServiceProcess } from "./gpu-service.js";
import type { HangingServer } from "./hanging-server.js";
import { listenOnFreePort } from "./ports.js";
import { jsonLines } from "./service-logs.js";

export class GpuPause {
  paused = false;

  constructor(private readonly gpu: GpuServiceProcess) {}

  pause(): void {
    if (this.gpu.child.pid === undefined) throw new Error("the GPU service has no process id");
    process.kill(this.gpu.child.pid, "SIGSTOP");
    this.paused = true;
  }

  resume(): void {
    if (!this.paused || this.gpu.child.pid === undefined) return;
    process.kill(this.gpu.child.pid, "SIGCONT");
    this.paused = false;
  }

  /** Freezes the service when the next answer through `proxy` brings its first delta. */
  pauseAtNextFirstDelta(proxy: FrameProxy): void {
    proxy.atNextFirstDelta(() => this.pause());
  }

  /** The service's "generate" log lines of one request. */
  logLines(requestId: string): Record<string, unknown>[] {
    return jsonLines(this.gpu.output()).filter((l) => l.msg === "generate" && l.requestId === requestId);
  }
}

export interface GpuControl {
  url: string;
  close(): Promise<void>;
}

export async function startGpuControl(pause: GpuPause, proxy: FrameProxy, hanging: HangingServer): Promise<GpuControl> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://control.invalid");
    const json = (status: number, body: unknown) =>
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (req.method === "POST" && url.pathname === "/pause-at-next-first-delta") {
      proxy.reset();
      pause.pauseAtNextFirstDelta(proxy);
      json(200, { armed: true });
    } else if (req.method === "POST" && url.pathname === "/resume") {
      pause.resume();
      json(200, { paused: pause.paused });
    } else if (url.pathname === "/state") json(200, { paused: pause.paused, proxyCancelled: proxy.cancelled });
    else if (url.pathname === "/hanging")
      json(200, { accepted: hanging.accepted, closedByCaller: hanging.closedByCaller });
    else if (url.pathname === "/log") json(200, pause.logLines(url.searchParams.get("requestId") ?? ""));
    else json(404, { error: "no such control" });
  });
  const port = await listenOnFreePort(server);
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
