/**
 * `wrangler dev` answers on a proxy worker (its own workerd process) that
 * forwards every request to the user worker in a second workerd; a deployed
 * Worker has no such hop. To measure the edge without it, this finds the user
 * worker's own socket: the loopback ports that workerd processes under the
 * wrangler process listen on (`ss -ltnp`, Linux), other than the proxy's and
 * the inspector's, the one whose /healthz answers like the edge. Undefined
 * where `ss` is missing or nothing answers.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import type { EdgeDevProcess } from "../support/edge-dev.js";

/** Every process below `root` (by /proc/<pid>/stat's parent pid). */
function descendants(root: number): Set<number> {
  const parent = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // the process ended meanwhile
    }
  }
  const found = new Set<number>([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parent)
      if (found.has(ppid) && !found.has(pid)) {
        found.add(pid);
        grew = true;
      }
  }
  return found;
}

export async function userWorkerUrl(edge: EdgeDevProcess): Promise<string | undefined> {
  let listing: string;
  try {
    listing = execFileSync("ss", ["-ltnpH"], { encoding: "utf8" });
  } catch {
    return undefined;
  }
  const ours = descendants(edge.pid);
  const edgePort = Number(new URL(edge.url).port);
  for (const line of listing.split("\n")) {
    const m = /127\.0\.0\.1:(\d+)\s.*"workerd",pid=(\d+)/.exec(line);
    if (!m || !ours.has(Number(m[2]))) continue;
    const port = Number(m[1]);
    if (port === edgePort || port === edgePort + 1) continue;
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) }).catch(
      () => undefined,
    );
    const body = res ? await res.text() : "";
    if (res && (res.status === 200 || res.status === 503) && body.includes('"status"'))
      return `http://127.0.0.1:${port}`;
  }
  return undefined;
}
