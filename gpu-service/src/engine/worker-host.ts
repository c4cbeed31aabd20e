/**
 * An Engine whose model runs in a worker thread, so the service's event loop
 * stays live while ONNX Runtime computes. One request at a time per worker;
 * the scheduler decides which request runs where.
 */
import { Worker } from "node:worker_threads";
import type { LocalEngineOptions } from "./local-engine.js";
import { type Engine, type EngineEvent, type GenerateParams, InvalidRequestError } from "./types.js";

type Outbound =
  | { type: "ready"; info: Engine["info"] }
  | { type: "failed"; message: string }
  | { type: "event"; id: number; event: EngineEvent }
  | { type: "done"; id: number }
  | { type: "error"; id: number; name: string; message: string; aborted: boolean }
  | { type: "closed" };

interface Pending {
  onEvent: (event: EngineEvent) => void;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private failure?: Error;

  private constructor(
    private readonly worker: Worker,
    readonly info: Engine["info"],
  ) {
    worker.on("message", (msg: Outbound) => {
      if (msg.type === "event") this.pending.get(msg.id)?.onEvent(msg.event);
      else if (msg.type === "done") this.settle(msg.id);
      else if (msg.type === "error") {
        const err = msg.aborted
          ? Object.assign(new Error(msg.message), { name: "AbortError" })
          : msg.name === "InvalidRequestError"
            ? new InvalidRequestError(msg.message)
            : new Error(msg.message);
        this.settle(msg.id, err);
      }
    });
    const fail = (err: Error) => {
      this.failure = err;
      for (const id of [...this.pending.keys()]) this.settle(id, err);
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`engine worker exited (${code})`)));
  }

  /** Starts a worker and loads the model in it. */
  static start(modelDir: string, options: LocalEngineOptions = {}): Promise<WorkerEngine> {
    const worker = new Worker(new URL("./worker-bootstrap.mjs", import.meta.url), {
      workerData: { modelDir, options },
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

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
