/**
 * A pass-through HTTP/1.1 proxy in front of a GPU service that watches its
 * Generate answers go by: it reads each Generate request's request_id (from
 * the request's Connect envelope), timestamps every non-empty Delta frame of
 * the answer (envelopes: 1 flag byte, 4-byte length, message) as it leaves the
 * service, and counts the answers whose caller hung up before they ended. Used
 * to measure the edge's streaming delay per stream and to see the edge cancel
 * upstream calls. `atNextFirstDelta` runs a function when the next answer's
 * first delta arrives, before it is passed on (a test pauses the service
 * there, so that a generation is certainly still running when its client goes
 * away). It listens on a loopback port the system picks.
 */
import http from "node:http";
import { fromBinary } from "@bufbuild/protobuf";
import { GenerateEventSchema, GenerateRequestSchema } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { listenOnFreePort } from "./ports.js";

export interface TimedDelta {
  text: string;
  /** performance.now() when the frame arrived from the service. */
  at: number;
}

export interface FrameProxy {
  url: string;
  /** Non-empty deltas since the last reset, by the Generate request's request_id ("" when it had none). */
  deltas: Map<string, TimedDelta[]>;
  /** Generate answers whose downstream closed before the upstream answer ended. */
  cancelled: number;
  /** Runs `fn` once, at the first delta of the next Generate answer to start after this call. */
  atNextFirstDelta(fn: () => void): void;
  reset(): void;
  close(): Promise<void>;
}

/** The request_id of a binary Connect streaming request body (its first envelope). */
function requestIdOf(body: Buffer): string {
  if (body.length < 5 || body.length < 5 + body.readUInt32BE(1)) return "";
  try {
    return fromBinary(GenerateRequestSchema, body.subarray(5, 5 + body.readUInt32BE(1))).requestId;
  } catch {
    return "";
  }
}

export async function startFrameProxy(target: string): Promise<FrameProxy> {
  let armed: (() => void) | undefined;
  const server = http.createServer((req, res) => {
    res.socket?.setNoDelay(true);
    const generate = req.url?.endsWith("/Generate") ?? false;
    const hook = generate ? armed : undefined;
    if (hook) armed = undefined;
    const body: Buffer[] = [];
    let key = "";
    req.on("data", (chunk: Buffer) => body.push(chunk));
    req.on("end", () => {
      if (generate) key = requestIdOf(Buffer.concat(body));
    });
    let firstDelta = true;
    let ended = false;
    const up = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      let buf = Buffer.alloc(0);
      upRes.on("data", (chunk: Buffer) => {
        const at = performance.now();
        if (generate) {
          buf = Buffer.concat([buf, chunk]);
          while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
            const len = buf.readUInt32BE(1);
            if (buf[0] === 0) {
              const ev = fromBinary(GenerateEventSchema, buf.subarray(5, 5 + len));
              if (ev.event.case === "delta" && ev.event.value.text) {
                const list = proxy.deltas.get(key) ?? [];
                list.push({ text: ev.event.value.text, at });
                proxy.deltas.set(key, list);
              }
              if (ev.event.case === "delta" && firstDelta) {
                firstDelta = false;
                hook?.();
              }
            }
            buf = buf.subarray(5 + len);
          }
        }
        res.write(chunk);
      });
      upRes.on("end", () => {
        ended = true;
        res.end();
      });
      // the service went away mid-answer: so does this answer
      upRes.on("close", () => {
        if (!ended) res.destroy();
      });
    });
    res.on("close", () => {
      if (!ended) {
        if (generate) proxy.cancelled++;
        up.destroy();
      }
    });
    up.on("socket", (s) => s.setNoDelay(true));
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  const port = await listenOnFreePort(server);
  const proxy: FrameProxy = {
    url: `http://127.0.0.1:${port}`,
    deltas: new Map(),
    cancelled: 0,
    atNextFirstDelta(fn) {
      armed = fn;
    },
    reset() {
      proxy.deltas = new Map();
      proxy.cancelled = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return proxy;
}
