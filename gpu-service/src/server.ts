/**
 * One loopback port for every client the service has: gRPC (HTTP/2 cleartext,
 * for @grpc/grpc-js and other gRPC stacks) and gRPC-Web / Connect over
 * HTTP/1.1 (for the edge's fetch-based client). A plain TCP listener peeks at
 * the first bytes of each connection: the HTTP/2 client preface ("PRI * HTTP/2.0")
 * goes to an http2 server, anything else to an http server. Both run the same
 * connect-node handler.
 *
 * With a certificate and key the port speaks TLS instead: one http2 secure
 * server with `allowHTTP1`, where ALPN picks HTTP/2 (gRPC) or HTTP/1.1
 * (gRPC-Web, Connect) per connection, so no sniffing is needed.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0");

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

export interface TlsFiles {
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
}

export async function listen(
  routes: (router: ConnectRouter) => void,
  host: string,
  port: number,
  interceptors: Interceptor[] = [],
  tls?: TlsFiles,
): Promise<RunningServer> {
  const handler = connectNodeAdapter({ routes, interceptors });
  const h1 = http.createServer(handler);
  const h2 = http2.createServer({}, handler);
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    // stream events are small writes: without this, Nagle's algorithm holds each one back
    // until the previous is acknowledged (up to the peer's 40 ms delayed ACK)
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  };

  const server: net.Server = tls
    ? http2.createSecureServer({ cert: tls.cert, key: tls.key, allowHTTP1: true }, handler).on("connection", track)
    : sniffingServer(h1, h2, track);

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;

  return {
    port: boundPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        h1.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      }),
  };
}

/** A TCP listener that hands each connection to the HTTP/2 or the HTTP/1.1 server by its first bytes. */
function sniffingServer(h1: http.Server, h2: http2.Http2Server, track: (socket: net.Socket) => void): net.Server {
  return net.createServer((socket) => {
    track(socket);
    socket.once("readable", function sniff() {
      const head: Buffer | null = socket.read();
      if (head === null) {
        socket.once("readable", sniff);
        return;
      }
      socket.unshift(head);
      const isH2 =
        head.length >= H2_PREFACE.length
          ? head.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)
          : H2_PREFACE.subarray(0, head.length).equals(head);
      (isH2 ? h2 : h1).emit("connection", socket);
    });
    socket.on("error", () => socket.destroy());
  });
}
