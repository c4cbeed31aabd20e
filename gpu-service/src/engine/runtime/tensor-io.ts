/**
 * The one place where tensors cross between JavaScript and ONNX Runtime, and where KV buffers
 * are allocated. Every session of the engine runs through a `SessionIo`; every KV buffer comes
 * from `allocateKv`.
 *
 * On CPU (what onnxruntime-node 1.30 offers besides WebGPU), an input `ort.Tensor` over a typed
 * array is borrowed by the native side for the run without a copy, and every output comes back
 * as a fresh ArrayBuffer copied out of ONNX Runtime's own. So the engine feeds its KV buffers in
 * place and asks only for small outputs (a step's hidden rows, the new tokens' keys and values,
 * logits). A device-resident path (KV kept on a CUDA device between runs, through IO binding)
 * would replace this module: `SessionIo.run` and `allocateKv` are all it would have to change.
 * See the README ("Execution") for what the Node binding supports on CUDA.
 *
 * `probe` counts KV allocations always (a test checks that a decode step makes none) and, when
 * `probe.timing` is on (benchmarks), where a step's time goes: inside each session's run, and
 * in the named spans around it. Inside a `phase` (the batch loop's prefills and rounds), the
 * spans are recorded under the phase's name as well ("round/run:batch-mid"), so that a
 * breakdown can tell a segment's runs in one phase from its runs in another.
 */
import type { ort } from "./session.js";

export interface Span {
  ms: number;
  /** CPU time of the whole process meanwhile (every thread), which other work on the machine disturbs less than `ms`. */
  cpuMs: number;
  count: number;
}

/** Counters of the engine's tensor traffic (process-wide; benchmarks reset and read them). */
export const probe = {
  /** When true, `span`/`spanAsync` and session runs record their time. */
  timing: false,
  spans: new Map<string, Span>(),
  /** The phase running now (`phase`), whose name prefixes the spans recorded inside it. */
  phase: undefined as string | undefined,
  /** KV buffers allocated, and their bytes. */
  kvAllocations: 0,
  kvAllocatedBytes: 0,
  reset(): void {
    this.spans.clear();
    this.kvAllocations = 0;
    this.kvAllocatedBytes = 0;
  },
};

/** Wall and process CPU time now, in ms. */
function clock(): [number, number] {
  const { user, system } = process.cpuUsage();
  return [performance.now(), (user + system) / 1000];
}

function record(name: string, [wall, cpu]: [number, number]): void {
  const [w, c] = clock();
  const label = probe.phase === undefined ? name : `${probe.phase}/${name}`;
  const s = probe.spans.get(label);
  if (s) {
    s.ms += w - wall;
    s.cpuMs += c - cpu;
    s.count++;
  } else probe.spans.set(label, { ms: w - wall, cpuMs: c - cpu, count: 1 });
}

/** Runs f, adding its time to the span `label` when timing is on. */
export function span<T>(label: string, f: () => T): T {
  if (!probe.timing) return f();
  const t0 = clock();
  try {
    return f();
  } finally {
    record(label, t0);
  }
}

/** `span` for async work. */
export async function spanAsync<T>(label: string, f: () => Promise<T>): Promise<T> {
  if (!probe.timing) return f();
  const t0 = clock();
  try {
    return await f();
  } finally {
    record(label, t0);
  }
}

/**
 * Runs f as a phase: its time goes to the span `label`, and the spans inside it to `label/...`
 * (phases do not nest: an inner one replaces the outer name while it runs).
 */
export async function phase<T>(label: string, f: () => Promise<T>): Promise<T> {
  if (!probe.timing) return f();
  const outer = probe.phase;
  const t0 = clock();
  probe.phase = label;
  try {
    return await f();
  } finally {
    probe.phase = outer;
    record(label, t0);
  }
}

/** A KV buffer of n floats (zeroed); every KV buffer the engine makes comes from here. */
export function allocateKv(n: number): Float32Array {
  probe.kvAllocations++;
  probe.kvAllocatedBytes += n * 4;
  return new Float32Array(n);
}

/** A session and the way tensors go in and out of it. */
export class SessionIo {
  constructor(
    readonly session: ort.InferenceSession,
    /** The span its runs are recorded under ("run:<name>"). */
    readonly name: string,
  ) {}

  private readonly fetchLists = new Map<ReadonlySet<string>, readonly string[]>();

  /** One run: feeds are borrowed for its duration; outputs (all, or all but `skip`) are new CPU tensors. */
  run(feeds: Record<string, ort.Tensor>, skip?: ReadonlySet<string>): Promise<ort.InferenceSession.OnnxValueMapType> {
    if (!skip) return spanAsync(`run:${this.name}`, () => this.session.run(feeds));
    let fetches = this.fetchLists.get(skip);
    if (!fetches) {
      fetches = this.session.outputNames.filter((n) => !skip.has(n));
      this.fetchLists.set(skip, fetches);
    }
    const list = fetches;
    return spanAsync(`run:${this.name}`, () => this.session.run(feeds, list));
  }

  endProfiling(): void {
    this.session.endProfiling();
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
