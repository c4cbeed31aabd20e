/**
 * The calling thread's time on a CPU and its time ready to run but waiting for one, in seconds:
 * the first two fields of Linux's /proc/thread-self/schedstat (nanoseconds). An engine worker
 * reports its own (worker-main.ts), so that an operator can tell a worker short of CPU (its
 * waiting time grows beside its running time: more busy threads than cores) from an idle one.
 * Undefined where the file is missing (not Linux, or a kernel without scheduler statistics).
 */
import { readFileSync } from "node:fs";

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
