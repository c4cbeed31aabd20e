/**
 * Ports from the operating system, never fixed ones: `listenOnFreePort` binds a
 * server to port 0 on loopback and says which port it got; `freePort` asks for
 * a port that a child process (wrangler dev) is then told to bind.
 */
import net from "node:net";

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

/** A loopback port that was free a moment ago (the system's choice), for a process that must be told its port. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  const port = await listenOnFreePort(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
