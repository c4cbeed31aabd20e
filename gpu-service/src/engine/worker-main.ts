/**
 * The engine worker: loads a LocalEngine and runs requests sent by
 * worker-host.ts (one at a time, or several at once when the engine batches),
 * posting their events back. An "abort" message
 * stops the running request at its next decoding step. A batching engine's
 * state (BatchStats) is posted as a "stats" message whenever it changes. A
 * "thread-time" message is answered with this thread's CPU and run-queue time
 * (thread-time.ts), between two decoding steps, and a "gc" message with its
 * garbage collections so far.
 *
 * Fault injection, for tests of what survives a failure (off unless the host
 * passes markers, which the service does only under TWIG_ALLOW_FAULT_INJECTION):
 * a request whose prompt contains `faults.exitMarker` ends this thread 20 ms
 * after its third delta, mid-request; one containing `faults.errorMarker`
 * fails at its third delta with an internal error.
 */
import { parentPort, workerData } from "node:worker_threads";
import { InvalidRequestError } from "./errors.js";
import type { EngineEvent } from "./events.js";
import { LocalEngine, type LocalEngineOptions } from "./local-engine.js";
import type { GenerateParams } from "./plan.js";
import { countGc, threadTime } from "./thread-time.js";
import type { FaultMarkers, Outbound } from "./worker-host.js";

type Inbound =
  | { type: "generate"; id: number; params: GenerateParams }
  | { type: "abort"; id: number }
  | { type: "thread-time"; id: number }
  | { type: "gc"; id: number }
  | { type: "close" };

const { modelDir, options, faults } = workerData as {
  modelDir: string;
  options: LocalEngineOptions;
  faults?: FaultMarkers;
};
const port = parentPort;
if (!port) throw new Error("worker-main.ts must run in a worker thread");

const aborts = new Map<number, AbortController>();
const gcTally = countGc();

/**
 * Messages to the host go out together, once per turn of the event loop: a batch round's events of
 * every sequence (and the stats after it) cross the thread boundary as one message, and the host
 * writes them to their streams in one go (worker-host.ts; its HTTP/2 session then sends them in one
 * write). ONNX Runtime's `run` waits for the next turn before it computes, so nothing waits longer
 * than the JS of the round that made it.
 */
const outbox: Outbound[] = [];
function send(msg: Outbound): void {
  outbox.push(msg);
  if (outbox.length === 1) setImmediate(flush);
}
function flush(): void {
  if (outbox.length > 0) port?.postMessage({ type: "batch", messages: outbox.splice(0) });
}

try {
  const engine = await LocalEngine.load(modelDir, options);
  port.postMessage({ type: "ready", info: engine.info });
  if (engine.batch) {
    let last = "";
    engine.batch.onStats = (stats) => {
      const key = JSON.stringify(stats);
      if (key !== last) send({ type: "stats", stats });
      last = key;
    };
    engine.batch.onStats(engine.batch.stats());
  }
  port.on("message", async (msg: Inbound) => {
    if (msg.type === "abort") return aborts.get(msg.id)?.abort();
    if (msg.type === "thread-time") return send({ type: "thread-time", id: msg.id, time: threadTime() });
    if (msg.type === "gc") return send({ type: "gc", id: msg.id, gc: gcTally() });
    if (msg.type === "close") {
      await engine.close();
      flush();
      port.postMessage({ type: "closed" });
      return;
    }
    const ctrl = new AbortController();
    aborts.set(msg.id, ctrl);
    const post = (event: EngineEvent) => send({ type: "event", id: msg.id, event });
    try {
      await engine.generate(msg.params, faults ? withFaults(msg.params, post, faults) : post, ctrl.signal);
      send({ type: "done", id: msg.id });
    } catch (err) {
      const e = err as Error;
      send({
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

/** The event callback of one request, with the injected fault its prompt asks for (if any). */
function withFaults(params: GenerateParams, post: (e: EngineEvent) => void, faults: FaultMarkers) {
  const text = params.prompt ?? (params.messages ?? []).map((m) => m.content).join("\n");
  const exit = faults.exitMarker !== undefined && text.includes(faults.exitMarker);
  const fail = faults.errorMarker !== undefined && text.includes(faults.errorMarker);
  if (!exit && !fail) return post;
  let deltas = 0;
  return (event: EngineEvent) => {
    post(event);
    if (event.type !== "delta" || ++deltas !== 3) return;
    // in a worker thread process.exit ends the thread, not the process; a moment later, while the
    // request still decodes, so that the deltas posted so far reach the host (a thread that ends
    // drops the messages it has queued)
    if (exit) setTimeout(() => process.exit(70), 20);
    else throw new Error(`injected fault: engine state lost at ${modelDir}`);
  };
}
