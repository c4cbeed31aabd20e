/**
 * What this isolate has seen of each GPU service: one that failed to connect
 * is avoided for DOWN_MS (tried last, not skipped: if every shard is marked
 * down, they are all tried again). Shards of a model are rotated so that load
 * spreads over the healthy ones.
 */

export const DOWN_MS = 10_000;

const downUntil = new Map<string, number>();
let turn = 0;

export function markDown(url: string, now = Date.now()): void {
  downUntil.set(url, now + DOWN_MS);
}

export function markUp(url: string): void {
  downUntil.delete(url);
}

export function isDown(url: string, now = Date.now()): boolean {
  return (downUntil.get(url) ?? 0) > now;
}

/** The order in which to try a model's shards: healthy ones first, rotated. */
export function tryOrder(urls: readonly string[], now = Date.now()): string[] {
  const start = turn++ % urls.length;
  const rotated = [...urls.slice(start), ...urls.slice(0, start)];
  return [...rotated.filter((u) => !isDown(u, now)), ...rotated.filter((u) => isDown(u, now))];
}

/** Forgets everything (tests). */
export function resetShardHealth(): void {
  downUntil.clear();
  turn = 0;
}
