/**
 * An Engine whose model runs in a worker thread, so the service's event loop
 * stays live while ONNX Runtime computes. One request at a time per worker (up to
 * `info.maxBatch` at once when its engine batches); the scheduler decides which
 * request runs where. A worker that exits fails
 * its request with EngineWorkerExitedError and every later one at once; its
 * owner (the server's supervisor.ts) hears of it through `onExit` and replaces it.
 */
import { setFlagsFromString } from "node:v8";
import { Worker } from "node:worker_threads";
import type { BatchStats, Engine } from "./engine.js";
import { InvalidRequestError } from "./errors.js";
import type { EngineEvent } from "./events.js";
import type { LocalEngineOptions } from "./local-engine.js";
import type { GenerateParams } from "./plan.js";
import type { GcTally, ThreadTime } from "./thread-time.js";

/** What the worker sends (worker-main.ts). */
export type Outbound =
  | { type: "ready"; info: Engine["info"] }
  | { type: "failed"; message: string }
  | { type: "event"; id: number; event: EngineEvent }
  | { type: "done"; id: number }
  | { type: "error"; id: number; name: string; message: string; aborted: boolean }
  | { type: "stats"; stats: BatchStats }
  | { type: "thread-time"; id: number; time?: ThreadTime }
  | { type: "gc"; id: number; gc: GcTally }
  | { type: "closed" };

/** What the worker sends once loaded: its messages of one turn of its event loop together (worker-main.ts). */
type Batch = { type: "batch"; messages: Outbound[] } | Outbound;

/** Test-only fault injection (see worker-main.ts): prompts containing these markers break the worker. */
export interface FaultMarkers {
  /** The worker thread exits 20 ms after the third delta of such a request. */
  exitMarker?: string;
  /** The request fails with an internal error at its third delta. */
  errorMarker?: string;
}

/** The worker running a request exited; another worker (or replica) can serve it. */
export class EngineWorkerExitedError extends Error {
  override name = "EngineWorkerExitedError";
}

interface Pending {
  onEvent: (event: EngineEvent) => void;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private failure?: Error;
  private readonly exitListeners: ((code: number) => void)[] = [];
  private readonly statsListeners: ((stats: BatchStats) => void)[] = [];
  /** Answers awaited from the worker ("thread-time", "gc"), by request id. */
  private readonly replies = new Map<number, (answer: unknown) => void>();
  /** The batch loop's latest state (a batching engine only). */
  batchStats?: BatchStats;

  private constructor(
    private readonly worker: Worker,
    readonly info: Engine["info"],
  ) {
    worker.on("message", (msg: Batch) => {
      if (msg.type === "batch") for (const m of msg.messages) this.receive(m);
      else this.receive(msg);
    });
    const fail = (err: Error) => {
      this.failure ??= err;
      for (const id of [...this.pending.keys()]) this.settle(id, this.failure);
      for (const answer of [...this.replies.values()]) answer(undefined);
    };
    worker.on("error", (err) => fail(new EngineWorkerExitedError(`the engine worker failed: ${err.message}`)));
    worker.on("exit", (code) => {
      fail(new EngineWorkerExitedError(`the engine worker exited (code ${code})`));
      for (const listener of this.exitListeners) listener(code);
    });
  }

  private receive(msg: Outbound): void {
    if (msg.type === "event") this.pending.get(msg.id)?.onEvent(msg.event);
    else if (msg.type === "stats") {
      this.batchStats = msg.stats;
      for (const listener of this.statsListeners) listener(msg.stats);
    } else if (msg.type === "thread-time") this.replies.get(msg.id)?.(msg.time);
    else if (msg.type === "gc") this.replies.get(msg.id)?.(msg.gc);
    else if (msg.type === "done") this.settle(msg.id);
    else if (msg.type === "error") {
      const err = msg.aborted
        ? Object.assign(new Error(msg.message), { name: "AbortError" })
        : msg.name === "InvalidRequestError"
          ? new InvalidRequestError(msg.message)
          : new Error(msg.message);
      this.settle(msg.id, err);
    }
  }

  /** Calls `listener` with the exit code when the worker thread ends (also after close()). */
  onExit(listener: (code: number) => void): void {
    this.exitListeners.push(listener);
  }

  /** Calls `listener` with a batching engine's state whenever it changes. */
  onStats(listener: (stats: BatchStats) => void): void {
    this.statsListeners.push(listener);
    if (this.batchStats) listener(this.batchStats);
  }

  /** Starts a worker and loads the model in it (its JS heap as `setEngineHeapStart` last set it). */
  static start(modelDir: string, options: LocalEngineOptions = {}, faults?: FaultMarkers): Promise<WorkerEngine> {
    const worker = new Worker(new URL("./worker-bootstrap.mjs", import.meta.url), {
      workerData: { modelDir, options, faults },
    });
    return new Promise((resolve, reject) => {
      const onMessage = (msg: Outbound) => {
        if (msg.type === "ready") {
          worker.off("message", onMessage);
          resolve(new WorkerEngine(worker, msg.info));
        } else if (msg.type === "failed") {
          worker.terminate();
          reject(new Error(`loading ${modelDir} failed: ${msg.message}`));
        }
      };
      worker.on("message", onMessage);
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new Error(`loading ${modelDir} failed: the worker exited (code ${code})`)));
    });
  }

  private settle(id: number, err?: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (err) p.reject(err);
    else p.resolve();
  }

  generate(params: GenerateParams, onEvent: (event: EngineEvent) => void, signal?: AbortSignal): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
      this.pending.set(id, { onEvent, resolve, reject });
      signal?.addEventListener("abort", () => this.worker.postMessage({ type: "abort", id }), { once: true });
      this.worker.postMessage({ type: "generate", id, params });
    });
  }

  /**
   * The worker thread's CPU and run-queue time (thread-time.ts), read in the worker between two
   * decoding steps; undefined where the system does not say, or if the worker has not answered
   * within `timeoutMs` (it has exited, or one step runs that long).
   */
  threadTime(timeoutMs = 1000): Promise<ThreadTime | undefined> {
    return this.ask("thread-time", timeoutMs);
  }

  /** The worker thread's garbage collections so far (thread-time.ts, `countGc`); undefined as for `threadTime`. */
  gc(timeoutMs = 1000): Promise<GcTally | undefined> {
    return this.ask("gc", timeoutMs);
  }

  /** Asks the worker (between two decoding steps); undefined if it has failed or not answered within `timeoutMs`. */
  private ask<T>(type: "thread-time" | "gc", timeoutMs: number): Promise<T | undefined> {
    if (this.failure) return Promise.resolve(undefined);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const done = (answer: unknown) => {
        clearTimeout(timer);
        this.replies.delete(id);
        resolve(answer as T | undefined);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.replies.set(id, done);
      this.worker.postMessage({ type, id });
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/**
 * The old generation each engine worker's JS heap starts with, in MB (V8's
 * --initial-old-space-size; 0: V8's own start, a few MB), for workers started after the call (the
 * flag is the process's; heaps read it when they are made). A worker's live heap is small (about
 * 13 MB on the demo model) but it allocates fast: ONNX Runtime's outputs every run, its batch's KV
 * buffers as they grow and shrink. From V8's own start it ran a full collection every 60-120 ms
 * at 16 streams (68 in one benchmark level), whose concurrent marking took about 30 ms of another
 * core each time; from 128 MB, 6 (README, "Continuous batching").
 */
export function setEngineHeapStart(mb: number): void {
  if (!(Number.isInteger(mb) && mb >= 0)) throw new RangeError(`a heap start of ${mb} MB`);
  setFlagsFromString(`--initial-old-space-size=${mb}`);
}
