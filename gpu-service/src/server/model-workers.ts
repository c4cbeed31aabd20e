/**
 * One served model's engine workers: each started in its own thread, loaded,
 * warmed up (one short request, so the first real one does not pay for ONNX
 * Runtime's first run), and kept up by a Supervisor that hands them to the
 * model's Scheduler and replaces those that die.
 */
import sharp from "sharp";
import type { Engine } from "../engine/engine.js";
import { planRequest } from "../engine/plan-request.js";
import { GC_KINDS } from "../engine/thread-time.js";
import { setEngineHeapStart, WorkerEngine } from "../engine/worker-host.js";
import type { ServiceConfig } from "./config.js";
import type { ServedModel } from "./inference.js";
import type { Logger } from "./log.js";
import { metrics, type WorkerThread, workerThreads } from "./metrics.js";
import { Scheduler } from "./scheduler.js";
import { type SupervisedEngine, Supervisor } from "./supervisor.js";

async function warmUp(engine: Engine): Promise<void> {
  const image = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 120, g: 120, b: 120 } } })
    .png()
    .toBuffer();
  const params = await planRequest(
    {
      image,
      messages: [{ role: "user", content: "describe the picture" }],
      maxTokens: 2,
      temperature: 0,
      topP: 1,
      stop: [],
      mode: engine.info.twig ? "twig" : "base",
    },
    engine.info,
  );
  await engine.generate(params, () => {});
}

/**
 * Starts `model`'s workers and fills in its engine and scheduler; rejects if
 * they cannot load. `onLive` hears the number of workers up whenever it changes.
 */
export async function startModelWorkers(
  model: ServedModel,
  config: ServiceConfig,
  log: Logger,
  onLive: (live: number) => void,
): Promise<Supervisor> {
  const name = model.entry.name;
  const numbers = new Set<number>();
  setEngineHeapStart(config.engineHeapMb);
  const start = async (): Promise<SupervisedEngine> => {
    const engine = await WorkerEngine.start(
      model.entry.dir,
      {
        threads: config.engineThreads,
        maxBatch: config.maxBatch,
        kvBudgetBytes: config.kvBudgetBytes,
        prefillRowsPerRound: config.prefillRowsPerRound,
        name,
        imageLimits: config.image,
        videoLimits: config.video,
        precision: config.precision,
        attention: config.attention,
        provider: config.provider,
        graphCacheDir: config.graphCacheDir,
        releaseWeights: true, // ONNX Runtime holds the model: its fp32 copy would only take memory
      },
      config.faults,
    );
    try {
      await warmUp(engine);
    } catch (err) {
      await engine.close();
      throw err;
    }
    // a batching worker's state as metrics, under the lowest worker number free (a replacement takes the one it replaces)
    let n = 0;
    while (numbers.has(n)) n++;
    numbers.add(n);
    const labels = { model: name, worker: String(n) };
    let preempted = 0;
    let longPrefills = 0;
    engine.onStats((s) => {
      metrics.preemptions.inc({ model: name }, s.preemptions - preempted);
      preempted = s.preemptions;
      metrics.longPrefills.inc({ model: name }, s.longPrefills - longPrefills);
      longPrefills = s.longPrefills;
      metrics.batchSize.set(labels, s.running);
      metrics.batchWaiting.set(labels, s.waiting);
      metrics.batchPrefilling.set(labels, s.prefilling);
      metrics.kvBytes.set(labels, s.kvBytes);
      metrics.kvBudgetBytes.set(labels, s.kvBudgetBytes);
    });
    const thread: WorkerThread = { labels, read: () => engine.threadTime(), readGc: () => engine.gc() };
    workerThreads.add(thread);
    engine.onExit(() => {
      numbers.delete(n);
      workerThreads.delete(thread);
      for (const m of [
        metrics.batchSize,
        metrics.batchWaiting,
        metrics.batchPrefilling,
        metrics.kvBytes,
        metrics.kvBudgetBytes,
        metrics.workerCpu,
        metrics.workerWaiting,
      ])
        m.remove(labels);
      for (const kind of GC_KINDS)
        for (const m of [metrics.workerGc, metrics.workerGcSeconds]) m.remove({ ...labels, kind });
    });
    return engine;
  };
  const scheduler = new Scheduler([], config.maxQueue);
  metrics.workerRestarts.inc({ model: name }, 0); // the series exists from the start, at 0
  if (config.maxBatch > 1) {
    metrics.preemptions.inc({ model: name }, 0);
    metrics.longPrefills.inc({ model: name }, 0);
  }
  const supervisor = new Supervisor({
    name,
    workers: config.workersPerModel,
    start,
    scheduler,
    onLive: (live) => {
      metrics.workers.set({ model: name }, live);
      onLive(live);
    },
    onRestart: () => metrics.workerRestarts.inc({ model: name }),
    log: (level, message) => log[level](`gpu-service: ${message}`),
  });
  const engines = await supervisor.start();
  model.engine = engines[0]; // for the model's description (info) only: requests go through the scheduler
  model.scheduler = scheduler;
  return supervisor;
}
