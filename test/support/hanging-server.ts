/**
 * A GPU shard that hangs: a TCP server that accepts every connection, reads
 * what it is sent and never answers a byte. It counts the connections it
 * accepted and the ones the caller closed, so a test can see the edge give up
 * on it (a transport timeout) rather than never try it.
 */
import net from "node:net";
import { listenOnFreePort } from "./ports.js";

export interface HangingServer {
  url: string;
  /** Connections accepted so far. */
  accepted: number;
  /** Accepted connections that the caller has closed. */
  closedByCaller: number;
  close(): Promise<void>;
}

export async function startHangingServer(): Promise<HangingServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    hanging.accepted++;
    sockets.add(socket);
    socket.on("data", () => {});
    socket.on("end", () => {
      hanging.closedByCaller++;
      socket.destroy();
    });
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  const port = await listenOnFreePort(server);
  const hanging: HangingServer = {
    url: `http://127.0.0.1:${port}`,
    accepted: 0,
    closedByCaller: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return hanging;
}
