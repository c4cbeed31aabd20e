/**
 * One loopback port for every client the service has: gRPC (HTTP/2 cleartext,
 * for @grpc/grpc-js and other gRPC stacks) and gRPC-Web / Connect over
 * HTTP/1.1 (for the edge's fetch-based client). A plain TCP listener peeks at
 * the first bytes of each connection: the HTTP/2 client preface ("PRI * HTTP/2.0")
 * goes to an http2 server, anything else to an http server. Both run the same
 * connect-node handler.
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

export async function listen(
  routes: (router: ConnectRouter) => void,
  host: string,
  port: number,
  interceptors: Interceptor[] = [],
): Promise<RunningServer> {
  const handler = connectNodeAdapter({ routes, interceptors });
  const h1 = http.createServer(handler);
  const h2 = http2.createServer({}, handler);
  const sockets = new Set<net.Socket>();

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
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
