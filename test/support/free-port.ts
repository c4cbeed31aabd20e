/**
 * Ports the system says are free right now, for processes that must be told a
 * port (wrangler dev): listen on port 0, read the port, close. `pair` also
 * asks for the next port up to be free (wrangler dev's inspector takes it).
 */
import { createServer } from "node:net";

function listen(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      const got = typeof address === "object" && address ? address.port : undefined;
      server.close(() => resolve(got));
    });
  });
}

/** A free loopback port; with `pair`, one whose next port is free too. */
export async function freePort(opts: { pair?: boolean } = {}): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await listen(0);
    if (port === undefined) continue;
    if (!opts.pair || (port < 65535 && (await listen(port + 1)) !== undefined)) return port;
  }
  throw new Error("no free port found");
}
