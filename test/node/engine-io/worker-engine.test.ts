/**
 * The engine in a worker thread on a tiny model on disk: events in order, the
 * same answer as the in-thread engine, a live main event loop while it
 * computes, clear errors for bad images, abort, and the worker thread's own
 * CPU time (what the service's per-worker CPU metrics read).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EngineEvent } from "../../../gpu-service/src/engine/events.js";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";
import type { GenerateParams, RequestInput } from "../../../gpu-service/src/engine/plan.js";
import { threadTime } from "../../../gpu-service/src/engine/thread-time.js";
import { WorkerEngine } from "../../../gpu-service/src/engine/worker-host.js";
import { writeTinyModel } from "../../../gpu-service/tools/make-tiny/tiny-model.js";

const dir = mkdtempSync(join(tmpdir(), "twig-worker-"));
let png: Uint8Array;
let jpeg: Uint8Array;
let worker: WorkerEngine;
let local: LocalEngine;

/** A request planned as the service plans it; `media` then replaces its picture, for the engine's own checks. */
const params = async (
  over: Partial<RequestInput> = {},
  media?: Pick<GenerateParams, "image">,
): Promise<GenerateParams> => ({
  ...(await local.plan({
    image: png,
    messages: [{ role: "user", content: "what colour is the circle ?" }],
    maxTokens: 12,
    temperature: 0,
    topP: 1,
    stop: [],
    mode: "twig",
    retainBudget: 4,
    ...over,
  })),
  ...media,
});

async function collect(engine: WorkerEngine | LocalEngine, p: GenerateParams): Promise<EngineEvent[]> {
  const events: EngineEvent[] = [];
  await engine.generate(p, (e) => events.push(e));
  return events;
}

beforeAll(async () => {
  writeTinyModel(dir, 9, "hf");
  const raw = Buffer.alloc(40 * 30 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37) % 251;
  png = await sharp(raw, { raw: { width: 40, height: 30, channels: 3 } })
    .png()
    .toBuffer();
  jpeg = await sharp(raw, { raw: { width: 40, height: 30, channels: 3 } })
    .jpeg()
    .toBuffer();
  worker = await WorkerEngine.start(dir, { threads: 1 });
  local = await LocalEngine.load(dir, { threads: 1 });
}, 60_000);
afterAll(async () => {
  await worker?.close();
  await local?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("engine in a worker thread", () => {
  it("streams started, deltas and finished, and answers as the in-thread engine does", async () => {
    const events = await collect(worker, await params());
    expect(events[0]).toMatchObject({ type: "started", visualTokens: 16 });
    expect(events.at(-1)).toMatchObject({ type: "finished" });
    const ids = events.flatMap((e) => (e.type === "delta" ? e.tokenIds : []));
    const localIds = (await collect(local, await params())).flatMap((e) => (e.type === "delta" ? e.tokenIds : []));
    expect(ids).toEqual(localIds);
    expect(worker.info).toMatchObject({ visualTokens: 16, numLayers: 8, twig: { k: 2, t: 2, finalWipeLayer: 6 } });
  });

  it("keeps the main event loop live while the model computes", async () => {
    // A timer on this thread runs between the worker's first and last delta: the main loop turns
    // while the model computes. (With the engine on this thread, each step's session.run holds the
    // loop, and the timer waits for the whole generation.)
    const order: string[] = [];
    const timer = setInterval(() => order.push("tick"), 1);
    const p = await params({ maxTokens: 40, mode: "base" });
    await worker.generate(p, (e) => order.push(e.type));
    clearInterval(timer);
    const first = order.indexOf("delta");
    const last = order.lastIndexOf("delta");
    expect(last - first).toBeGreaterThan(10); // many deltas
    expect(order.slice(first, last).filter((x) => x === "tick").length).toBeGreaterThanOrEqual(1);
  });

  it("accepts a JPEG and rejects a text file posing as an image with a clear error", async () => {
    const events = await collect(worker, await params({ image: jpeg }));
    expect(events.at(-1)?.type).toBe("finished");
    await expect(
      collect(worker, await params({}, { image: new TextEncoder().encode("hello, not an image") })),
    ).rejects.toMatchObject({
      name: "InvalidRequestError",
      message: expect.stringMatching(/not a PNG, JPEG, WebP or GIF/),
    });
    const corrupt = png.slice(0, 40);
    await expect(collect(worker, await params({}, { image: corrupt }))).rejects.toMatchObject({
      name: "InvalidRequestError",
    });
    await expect(collect(worker, await params({}, { image: new Uint8Array() }))).rejects.toMatchObject({
      message: expect.stringMatching(/empty/),
    });
  });

  it("reports the worker thread's own CPU time: not the main thread's, and growing while it computes", async () => {
    const main0 = threadTime();
    const t0 = await worker.threadTime();
    if (process.platform !== "linux") {
      expect(t0).toBeUndefined(); // only Linux says
      return;
    }
    if (!main0 || !t0) throw new Error("no /proc/thread-self/schedstat on this Linux");
    // this thread runs for 0.3 s of CPU while the worker idles: its time must not count it
    let main = main0;
    while (main.running - main0.running < 0.3) main = threadTime() ?? main;
    const t1 = await worker.threadTime();
    expect(t1?.running).toBeGreaterThanOrEqual(t0.running);
    expect((t1?.running ?? 0) - t0.running).toBeLessThan(0.15);
    await collect(worker, await params({ maxTokens: 40, mode: "base" }));
    const t2 = await worker.threadTime();
    expect((t2?.running ?? 0) - (t1?.running ?? 0)).toBeGreaterThan(0);
    expect(t2?.waiting).toBeGreaterThanOrEqual(t1?.waiting ?? 0);
  });

  it("stops an aborted request and serves the next one", async () => {
    const ctrl = new AbortController();
    const run = worker.generate(await params({ maxTokens: 200, mode: "base" }), () => ctrl.abort(), ctrl.signal);
    await expect(run).rejects.toMatchObject({ name: "AbortError" });
    const events = await collect(worker, await params());
    expect(events.at(-1)?.type).toBe("finished");
  });
});
