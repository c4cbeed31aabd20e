/**
 * Ports from the operating system, never fixed ones: `listenOnFreePort` binds a
 * server to port 0 on loopback and says which port it got; `freePort`
 * (free-port.ts) asks for a port that a child process is then told to bind.
 */
import type net from "node:net";

export { freePort } from "./free-port.js";

/** Binds `server` to a free loopback port and resolves with that port. */
export function listenOnFreePort(server: net.Server, host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      if (!address || typeof address !== "object") return reject(new Error("the server has no port"));
      resolve(address.port);
    });
  });
}
