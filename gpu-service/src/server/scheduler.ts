/**
 * Admission and fair order for one model's engine workers.
 *
 * Requests wait in per-tenant FIFO queues; a free worker takes the head of the
 * queue of the waiting tenant served least recently (a tenant never served goes
 * first), so one tenant's burst cannot starve another's single request: it
 * waits at most for one request of each other waiting tenant. The total number waiting is bounded (callers get
 * RESOURCE_EXHAUSTED past it). A request whose signal aborts while waiting
 * leaves the queue; one that aborts while running is stopped by its engine
 * within a decoding step, and the worker takes the next request at once.
 *
 * A worker that batches (its engine's `info.maxBatch` above 1) runs that many requests at
 * once: it is idle once per free place (a lane), and a request goes to the worker with the
 * most free lanes, so that load spreads over the workers.
 *
 * Workers come and go (supervisor.ts replaces one that dies): a removed worker
 * is never handed a request again. While the model has no worker at all, new
 * and waiting requests are answered UNAVAILABLE, so that callers go to another
 * replica instead of waiting for a restart.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Engine } from "../engine/engine.js";
import type { EngineEvent } from "../engine/events.js";
import type { GenerateParams } from "../engine/plan.js";

const noWorker = () =>
  new ConnectError(
    "no engine worker of this model is up (one is restarting); retry on another replica",
    Code.Unavailable,
  );

interface Job {
  tenant: string;
  params: GenerateParams;
  onEvent: (e: EngineEvent) => void;
  signal?: AbortSignal;
  enqueuedAt: number;
  resolve: (queueMs: number) => void;
  reject: (err: unknown) => void;
  start: (engine: Engine) => void;
}

export interface SchedulerStats {
  waiting: number;
  running: number;
}

export class Scheduler {
  private readonly engines: Set<Engine>;
  /** One entry per free lane (an engine appears as often as it has free lanes). */
  private readonly idle: Engine[];
  private readonly queues = new Map<string, Job[]>();
  /** Tenants with waiting jobs. */
  private readonly rotation: string[] = [];
  /** Dispatch counter value at each tenant's last service. */
  private readonly lastServed = new Map<string, number>();
  private dispatched = 0;
  private waiting = 0;
  private running = 0;

  constructor(
    engines: readonly Engine[],
    private readonly maxQueue: number,
  ) {
    this.engines = new Set(engines);
    this.idle = engines.flatMap(lanes);
  }

  /** A worker that may take requests from now on. */
  add(engine: Engine): void {
    this.engines.add(engine);
    this.idle.push(...lanes(engine));
    this.dispatch();
  }

  /** A worker that must take no more requests (its current one, if any, ends as its engine ends it). */
  remove(engine: Engine): void {
    this.engines.delete(engine);
    for (let i = this.idle.indexOf(engine); i >= 0; i = this.idle.indexOf(engine)) this.idle.splice(i, 1);
    if (this.engines.size > 0) return;
    for (const tenant of [...this.rotation]) {
      for (const job of [...(this.queues.get(tenant) ?? [])]) {
        this.dequeue(job);
        job.reject(noWorker());
      }
    }
  }

  stats(): SchedulerStats {
    return { waiting: this.waiting, running: this.running };
  }

  /** Runs a request when a worker is free; resolves with the time it waited (ms). */
  run(
    tenant: string,
    params: GenerateParams,
    onEvent: (e: EngineEvent) => void,
    signal?: AbortSignal,
  ): Promise<number> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.engines.size === 0) return Promise.reject(noWorker());
    if (this.waiting >= this.maxQueue && this.idle.length === 0) {
      return Promise.reject(
        new ConnectError(`the queue is full (${this.maxQueue} waiting); retry later`, Code.ResourceExhausted),
      );
    }
    return new Promise<number>((resolve, reject) => {
      const job: Job = {
        tenant,
        params,
        onEvent,
        signal,
        enqueuedAt: performance.now(),
        resolve,
        reject,
        start: (engine) => {
          const queueMs = performance.now() - job.enqueuedAt;
          this.running++;
          engine
            .generate(params, onEvent, signal)
            .then(() => resolve(queueMs), reject)
            .finally(() => {
              this.running--;
              if (this.engines.has(engine)) this.idle.push(engine);
              this.dispatch();
            });
        },
      };
      const queue = this.queues.get(tenant) ?? [];
      if (queue.length === 0) this.rotation.push(tenant);
      queue.push(job);
      this.queues.set(tenant, queue);
      this.waiting++;
      signal?.addEventListener(
        "abort",
        () => {
          if (this.dequeue(job)) reject(signal.reason);
        },
        { once: true },
      );
      this.dispatch();
    });
  }

  private dequeue(job: Job): boolean {
    const queue = this.queues.get(job.tenant);
    const i = queue?.indexOf(job) ?? -1;
    if (!queue || i < 0) return false;
    queue.splice(i, 1);
    this.waiting--;
    if (queue.length === 0) {
      this.queues.delete(job.tenant);
      this.rotation.splice(this.rotation.indexOf(job.tenant), 1);
    }
    return true;
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.rotation.length > 0) {
      let pick = 0;
      const served = (t: string) => this.lastServed.get(t) ?? -1;
      for (let i = 1; i < this.rotation.length; i++)
        if (served(this.rotation[i]) < served(this.rotation[pick])) pick = i;
      const tenant = this.rotation[pick];
      const queue = this.queues.get(tenant) as Job[];
      const job = queue.shift() as Job;
      this.waiting--;
      this.lastServed.set(tenant, this.dispatched++);
      if (queue.length === 0) {
        this.queues.delete(tenant);
        this.rotation.splice(pick, 1);
      }
      job.start(this.takeLane());
    }
  }

  /** A free lane of the worker with the most free lanes. */
  private takeLane(): Engine {
    const free = new Map<Engine, number>();
    for (const e of this.idle) free.set(e, (free.get(e) ?? 0) + 1);
    let best = this.idle[0];
    for (const [e, n] of free) if (n > (free.get(best) ?? 0)) best = e;
    this.idle.splice(this.idle.indexOf(best), 1);
    return best;
  }
}

/** An engine's lanes: one per request it runs at once. */
function lanes(engine: Engine): Engine[] {
  return Array.from({ length: Math.max(1, engine.info.maxBatch ?? 1) }, () => engine);
}
