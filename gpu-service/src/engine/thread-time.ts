/**
 * The calling thread's time on a CPU and its time ready to run but waiting for one, in seconds:
 * the first two fields of Linux's /proc/thread-self/schedstat (nanoseconds). An engine worker
 * reports its own (worker-main.ts), so that an operator can tell a worker short of CPU (its
 * waiting time grows beside its running time: more busy threads than cores) from an idle one.
 * Undefined where the file is missing (not Linux, or a kernel without scheduler statistics).
 */
import { readFileSync } from "node:fs";
import { constants, PerformanceObserver } from "node:perf_hooks";

export interface ThreadTime {
  /** Seconds this thread has run on a CPU. */
  running: number;
  /** Seconds this thread has been runnable and waited in a run queue. */
  waiting: number;
}

export function threadTime(): ThreadTime | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/thread-self/schedstat", "utf8");
  } catch {
    return undefined;
  }
  const [running, waiting] = text.trim().split(/\s+/).map(Number);
  if (!Number.isFinite(running) || !Number.isFinite(waiting)) return undefined;
  return { running: running / 1e9, waiting: waiting / 1e9 };
}

/**
 * A stopwatch of work on the calling thread, in ms: the wall time since it started less the time the
 * thread waited for a core meanwhile (a core lost to other work, such as another engine worker or the
 * service's own thread, says nothing of the work). Where the wait is not known, the wall time or the
 * process's CPU time, whichever is less (the process's, so only right for a lone busy thread).
 */
export function coreStopwatch(): () => number {
  const t0 = performance.now();
  const waited0 = threadTime()?.waiting;
  const cpu0 = waited0 === undefined ? process.cpuUsage() : undefined;
  return () => {
    const wall = performance.now() - t0;
    const waited = threadTime()?.waiting;
    if (waited0 !== undefined && waited !== undefined) return wall - 1000 * (waited - waited0);
    if (!cpu0) return wall;
    const cpu = process.cpuUsage(cpu0);
    return Math.min(wall, (cpu.user + cpu.system) / 1000);
  };
}

/** The kinds of garbage collection perf_hooks tells apart (its "gc" entries' `detail.kind`). */
export const GC_KINDS = ["minor", "major", "incremental", "weakcb"] as const;
export type GcKind = (typeof GC_KINDS)[number];

/** Garbage collections on a thread so far: how many of each kind, and the seconds each kind paused the thread. */
export type GcTally = Record<GcKind, { count: number; seconds: number }>;

const KIND_OF: Record<number, GcKind> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
};

/**
 * Starts counting the calling thread's garbage collections (perf_hooks' "gc" entries, which
 * arrive a little after each collection); the function returned reads the tally so far. An engine
 * worker counts its own (worker-main.ts): full collections (`major`) are what a worker's heap
 * settings change (worker-host.ts, `setEngineHeapStart`).
 */
export function countGc(): () => GcTally {
  const tally = Object.fromEntries(GC_KINDS.map((k) => [k, { count: 0, seconds: 0 }])) as GcTally;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = KIND_OF[(e as { detail?: { kind?: number } }).detail?.kind ?? -1];
      if (!kind) continue;
      tally[kind].count++;
      tally[kind].seconds += e.duration / 1000;
    }
  }).observe({ entryTypes: ["gc"] });
  return () => Object.fromEntries(GC_KINDS.map((k) => [k, { ...tally[k] }])) as GcTally;
}
