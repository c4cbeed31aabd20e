/**
 * `npm run bench -- batch`: where continuous batching's time goes, in process. One LocalEngine
 * batching up to B (default: the demo model, 2 threads) is called by N concurrent streams per mode
 * (each stream sending its requests one after another: pictures of the demo model's test split,
 * "describe the picture ."), with the engine's timing probe on (runtime/tensor-io.ts). Prints per
 * mode and level the aggregate tokens per second, then the wall time split into the batch loop's
 * phases (prefill: joining sequences; round: decoding steps of the whole batch) and the rest
 * (planning, pictures, waiting), and each phase's session runs: how many, wall and process CPU
 * ms per run, share of the wall time. The process's CPU time (all threads) is printed beside the
 * wall time: other work on a shared machine disturbs it far less. Speed figures are only
 * comparable within one run.
 */
import { basename } from "node:path";
import { LocalEngine } from "../../src/engine/local-engine.js";
import type { Precision } from "../../src/engine/options.js";
import type { Mode } from "../../src/engine/plan.js";
import { probe } from "../../src/engine/runtime/tensor-io.js";
import { type BatchingBenchArgs, benchModelDir, DESCRIBE, testPictures } from "./batch-workload.js";

export interface BatchBreakdownArgs extends BatchingBenchArgs {
  precision: Precision;
  /** Every round drafts at most this many tokens a sequence (0: none) instead of what the draft policy picks. */
  draftCap?: number;
}

export async function benchBatchBreakdown(args: BatchBreakdownArgs): Promise<void> {
  const modelDir = benchModelDir(args.model);
  const pictures = testPictures(args.pictures);
  const engine = await LocalEngine.load(modelDir, {
    threads: args.threads,
    maxBatch: args.batch,
    prefillRowsPerRound: args.prefillRows,
    precision: args.precision,
    draftCap: args.draftCap,
  });
  const call = async (picture: Uint8Array, mode: Mode) => {
    let tokens = 0;
    const params = await engine.plan({
      image: picture,
      messages: [{ role: "user", content: DESCRIBE }],
      mode,
      maxTokens: args.maxTokens,
      temperature: 0,
      topP: 1,
      stop: [],
    });
    await engine.generate(params, (e) => {
      if (e.type === "delta") tokens += e.tokenIds.length;
    });
    return tokens;
  };
  console.log(
    `bench batch: ${basename(modelDir)} (${args.precision}) in process, batching up to ${args.batch}, ${args.threads} thread(s), up to ${args.maxTokens} tokens per request (greedy), ${args.perStream} requests per stream` +
      (args.draftCap === undefined ? "" : `, every round drafting at most ${args.draftCap} token(s) a sequence`),
  );
  try {
    for (const mode of args.modes) {
      await call(pictures[0], mode); // warm up
      for (const streams of args.levels) {
        probe.reset();
        probe.timing = true;
        let tokens = 0;
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        await Promise.all(
          Array.from({ length: streams }, async (_, s) => {
            for (let k = 0; k < args.perStream; k++) {
              const n = await call(pictures[(s * args.perStream + k) % pictures.length], mode);
              tokens += n;
            }
          }),
        );
        const wall = performance.now() - t0;
        const { user, system } = process.cpuUsage(cpu0);
        const cpu = (user + system) / 1000;
        probe.timing = false;
        const spans = new Map(probe.spans);
        const ms = (label: string) => spans.get(label)?.ms ?? 0;
        const cpuMs = (label: string) => spans.get(label)?.cpuMs ?? 0;
        const count = (label: string) => spans.get(label)?.count ?? 0;
        const pc = (x: number) => `${((100 * x) / wall).toFixed(1)}%`;
        const rest = wall - ms("prefill") - ms("round");
        console.log(
          `\n  ${mode}, ${streams} stream(s): ${tokens} tokens in ${wall.toFixed(0)} ms, ${((tokens / wall) * 1000).toFixed(1)} tok/s; ` +
            `${count("round")} rounds (${(tokens / Math.max(1, count("round"))).toFixed(2)} tokens a round), ${count("prefill/run:vision")} joiners, ${count("prefill")} prefill phases`,
        );
        console.log(
          `  wall: prefill ${ms("prefill").toFixed(0)} ms (${pc(ms("prefill"))}), rounds ${ms("round").toFixed(0)} ms (${pc(ms("round"))}), rest ${rest.toFixed(0)} ms (${pc(rest)}); ` +
            `process CPU ${cpu.toFixed(0)} ms (${((tokens / cpu) * 1000).toFixed(1)} tokens per CPU s): prefill ${cpuMs("prefill").toFixed(0)}, rounds ${cpuMs("round").toFixed(0)}`,
        );
        console.log("  phase     span                          runs    ms/run   CPU ms/run     ms   of wall");
        const rows = [...spans.entries()].filter(([k]) => k.includes("/")).sort((a, b) => b[1].ms - a[1].ms);
        for (const [label, s] of rows) {
          const [phase, name] = label.split("/", 2);
          console.log(
            `  ${phase.padEnd(8)}  ${name.padEnd(26)}  ${String(s.count).padStart(6)}  ${(s.ms / s.count).toFixed(3).padStart(8)}  ${(s.cpuMs / s.count).toFixed(3).padStart(11)}  ${s.ms.toFixed(0).padStart(5)}  ${pc(s.ms).padStart(7)}`,
          );
        }
      }
    }
  } finally {
    probe.timing = false;
    await engine.close();
  }
}
