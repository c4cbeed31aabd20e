/**
 * A pass-through HTTP/1.1 proxy in front of a GPU service that watches its
 * Generate answers go by: it timestamps every non-empty Delta frame (Connect
 * envelopes: 1 flag byte, 4-byte length, message) as it leaves the service,
 * and counts the answers whose caller hung up before they ended. Used to
 * measure the edge's streaming delay and to see the edge cancel upstream calls.
 */
import http from "node:http";
import { fromBinary } from "@bufbuild/protobuf";
import { GenerateEventSchema } from "@twigserve/proto/twigvlm/v1/inference_pb.js";

export interface FrameProxy {
  url: string;
  /** Non-empty deltas seen since the last reset, with performance.now() at arrival. */
  deltas: { text: string; at: number }[];
  /** Generate answers whose downstream closed before the upstream answer ended. */
  cancelled: number;
  reset(): void;
  close(): Promise<void>;
}

export async function startFrameProxy(port: number, target: string): Promise<FrameProxy> {
  const proxy: FrameProxy = {
    url: `http://127.0.0.1:${port}`,
    deltas: [],
    cancelled: 0,
    reset() {
      proxy.deltas = [];
      proxy.cancelled = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  const server = http.createServer((req, res) => {
    const generate = req.url?.endsWith("/Generate") ?? false;
    const up = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      let ended = false;
      let buf = Buffer.alloc(0);
      upRes.on("data", (chunk: Buffer) => {
        const at = performance.now();
        if (generate) {
          buf = Buffer.concat([buf, chunk]);
          while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
            const len = buf.readUInt32BE(1);
            if (buf[0] === 0) {
              const ev = fromBinary(GenerateEventSchema, buf.subarray(5, 5 + len));
              if (ev.event.case === "delta" && ev.event.value.text)
                proxy.deltas.push({ text: ev.event.value.text, at });
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
      res.on("close", () => {
        if (!ended) {
          if (generate) proxy.cancelled++;
          up.destroy();
        }
      });
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => ok());
  });
  return proxy;
}
