/**
 * The engine worker: loads a LocalEngine and runs requests sent by
 * worker-host.ts, one at a time, posting its events back. An "abort" message
 * stops the running request at its next decoding step.
 */
import { parentPort, workerData } from "node:worker_threads";
import { LocalEngine, type LocalEngineOptions } from "./local-engine.js";
import { type GenerateParams, InvalidRequestError } from "./types.js";

type Inbound =
  | { type: "generate"; id: number; params: GenerateParams }
  | { type: "abort"; id: number }
  | { type: "close" };

const { modelDir, options } = workerData as { modelDir: string; options: LocalEngineOptions };
const port = parentPort;
if (!port) throw new Error("worker-main.ts must run in a worker thread");

const aborts = new Map<number, AbortController>();
try {
  const engine = await LocalEngine.load(modelDir, options);
  port.postMessage({ type: "ready", info: engine.info });
  port.on("message", async (msg: Inbound) => {
    if (msg.type === "abort") return aborts.get(msg.id)?.abort();
    if (msg.type === "close") {
      await engine.close();
      port.postMessage({ type: "closed" });
      return;
    }
    const ctrl = new AbortController();
    aborts.set(msg.id, ctrl);
    try {
      await engine.generate(msg.params, (event) => port.postMessage({ type: "event", id: msg.id, event }), ctrl.signal);
      port.postMessage({ type: "done", id: msg.id });
    } catch (err) {
      const e = err as Error;
      port.postMessage({
        type: "error",
        id: msg.id,
        name: e instanceof InvalidRequestError ? "InvalidRequestError" : e.name,
        message: e.message,
        aborted: ctrl.signal.aborted,
      });
    } finally {
      aborts.delete(msg.id);
    }
  });
} catch (err) {
  port.postMessage({ type: "failed", message: (err as Error).message });
}
