/** `npm run bench -- <name> [--key value]...`: benchmarks that print tables. */
import { parseArgs } from "node:util";
import { ATTENTION_IMPLS, type AttentionImpl, PRECISIONS, type Precision } from "../../src/engine/options.js";
import type { Mode } from "../../src/engine/plan.js";
import { MODES } from "../../src/engine/twig/modes.js";
import { benchBatchBreakdown } from "./batch-breakdown.js";
import { benchCancel } from "./cancel.js";
import { benchEngine } from "./engine.js";
import { benchHostile } from "./hostile.js";
import { benchInt4 } from "./int4.js";
import { benchRealPath } from "./real-path.js";
import { benchSegment } from "./segment.js";
import { benchService } from "./service.js";
import { benchServiceBatching } from "./service-batching.js";
import { benchTwig } from "./twig.js";

const [name, ...rest] = process.argv.slice(2);
const { values } = parseArgs({
  args: rest,
  options: {
    hidden: { type: "string", default: "2048" },
    layers: { type: "string", default: "16" },
    precision: { type: "string", default: "fp32,int4" },
    attention: { type: "string", default: "contrib,direct" },
    context: { type: "string", default: "600" },
    threads: { type: "string", default: "2" },
    reps: { type: "string", default: "9" },
    tokens: { type: "string", default: "32" },
    model: { type: "string" },
    workers: { type: "string", default: "1" },
    "per-stream": { type: "string", default: "4" },
    "max-tokens": { type: "string", default: "64" },
    transport: { type: "string", default: "connect" },
    grid: { type: "string", default: "24" },
    retain: { type: "string" },
    real: { type: "boolean", default: false },
    contexts: { type: "string", default: "200,600" },
    modes: { type: "string", default: "base,ttp-only,twig" },
    provider: { type: "string", default: "cpu" },
    rounds: { type: "string", default: "60" },
    batch: { type: "string" },
    "draft-cap": { type: "string" },
    pictures: { type: "string" },
    "prefill-rows": { type: "string" },
    warmup: { type: "string", default: "8" },
    "min-requests": { type: "string", default: "16" },
    repeat: { type: "string", default: "1" },
    against: { type: "string" },
    configs: { type: "string", default: "1x1,1x3,8x1,8x2,8x3,16x2" },
    past: { type: "string", default: "80" },
    levels: { type: "string", default: "1,4,16,32" },
  },
});
/** A whole-number option of at least 1, checked. */
function wholeAtLeastOne(name: "repeat"): number {
  const v = Number(values[name]);
  if (!(Number.isInteger(v) && v >= 1)) {
    console.error(`--${name} takes a whole number, at least 1, got ${values[name]}`);
    process.exit(2);
  }
  return v;
}

/** --prefill-rows, checked: a whole number of prompt rows, at least 1. */
function prefillRows(): number | undefined {
  const v = values["prefill-rows"];
  if (v === undefined) return undefined;
  if (!(Number.isInteger(Number(v)) && Number(v) >= 1)) {
    console.error(`--prefill-rows takes a whole number of prompt rows (at least 1), got ${v}`);
    process.exit(2);
  }
  return Number(v);
}

if (name === "engine" && (values.model !== undefined || values.real)) {
  const precisions = (values.precision ?? "").split(",") as Precision[];
  const modes = (values.modes ?? "").split(",") as Mode[];
  if (!precisions.every((p) => PRECISIONS.includes(p)) || !modes.every((m) => MODES.includes(m))) {
    console.error(`--precision takes ${PRECISIONS.join(", ")}; --modes ${MODES.join(", ")} (comma-separated)`);
    process.exit(2);
  }
  await benchRealPath({
    model: values.model,
    hidden: Number(values.hidden),
    layers: Number(values.layers),
    contexts: (values.contexts ?? "").split(",").map(Number),
    precisions,
    modes,
    tokens: Number(rest.includes("--tokens") ? values.tokens : 48),
    threads: Number(values.threads),
    reps: Number(rest.includes("--reps") ? values.reps : 2),
    provider: values.provider === "cuda" ? "cuda" : "cpu",
  });
} else if (name === "engine") {
  const precisions = (values.precision ?? "").split(",") as Precision[];
  const attentions = (values.attention ?? "").split(",") as AttentionImpl[];
  if (!precisions.every((p) => PRECISIONS.includes(p)) || !attentions.every((a) => ATTENTION_IMPLS.includes(a))) {
    console.error(
      `--precision takes ${PRECISIONS.join(", ")} (comma-separated); --attention ${ATTENTION_IMPLS.join(", ")} (comma-separated)`,
    );
    process.exit(2);
  }
  await benchEngine({
    precisions,
    attentions,
    hidden: Number(values.hidden),
    layers: Number(values.layers),
    context: Number(values.context),
    threads: Number(values.threads),
    reps: Number(values.reps),
  });
} else if (name === "int4") {
  await benchInt4({
    hidden: Number(values.hidden),
    layers: Number(rest.includes("--layers") ? values.layers : 4),
    context: Number(values.context),
    threads: Number(values.threads),
    reps: Number(rest.includes("--reps") ? values.reps : 15),
  });
} else if (name === "twig") {
  await benchTwig({
    hidden: Number(rest.includes("--hidden") ? values.hidden : 512),
    layers: Number(rest.includes("--layers") ? values.layers : 16),
    grid: Number(values.grid),
    retain: values.retain === undefined ? undefined : Number(values.retain),
    threads: Number(values.threads),
    tokens: Number(values.tokens),
    reps: Number(rest.includes("--reps") ? values.reps : 3),
  });
} else if (name === "service" && values.batch !== undefined) {
  await benchServiceBatching({
    model: values.model,
    batch: Number(values.batch),
    workers: Number(values.workers),
    threads: Number(rest.includes("--threads") ? values.threads : 2),
    perStream: Number(rest.includes("--per-stream") ? values["per-stream"] : 2),
    maxTokens: Number(rest.includes("--max-tokens") ? values["max-tokens"] : 48),
    levels: (values.levels ?? "").split(",").map(Number),
    modes: (values.modes ?? "").split(",") as Mode[],
    pictures: values.pictures,
    prefillRows: prefillRows(),
    warmup: Number(values.warmup),
    minRequests: Number(values["min-requests"]),
    repeat: wholeAtLeastOne("repeat"),
  });
} else if (name === "batch") {
  const cap = values["draft-cap"];
  if (cap !== undefined && !(Number.isInteger(Number(cap)) && Number(cap) >= 0)) {
    console.error(`--draft-cap takes a whole number of tokens (0: no drafts), got ${cap}`);
    process.exit(2);
  }
  const precision = (rest.includes("--precision") ? values.precision : "fp32") as Precision;
  if (!PRECISIONS.includes(precision)) {
    console.error(`--precision takes one of ${PRECISIONS.join(", ")}`);
    process.exit(2);
  }
  await benchBatchBreakdown({
    model: values.model,
    precision,
    batch: Number(values.batch ?? 32),
    threads: Number(values.threads),
    perStream: Number(rest.includes("--per-stream") ? values["per-stream"] : 2),
    maxTokens: Number(rest.includes("--max-tokens") ? values["max-tokens"] : 48),
    levels: (rest.includes("--levels") ? (values.levels ?? "") : "16").split(",").map(Number),
    modes: (rest.includes("--modes") ? (values.modes ?? "") : "twig").split(",") as Mode[],
    draftCap: cap === undefined ? undefined : Number(cap),
    pictures: values.pictures,
    prefillRows: prefillRows(),
  });
} else if (name === "segment") {
  const configs = (values.configs ?? "").split(",").map((c) => {
    const [batch, rows] = c.split("x").map(Number);
    if (!(Number.isInteger(batch) && batch >= 1 && Number.isInteger(rows) && rows >= 1)) {
      console.error(`--configs takes BxS pairs such as 8x2 (B sequences of S rows), got ${c}`);
      process.exit(2);
    }
    return { batch, rows };
  });
  await benchSegment({
    model: values.model,
    against: values.against,
    configs,
    past: Number(values.past),
    reps: Number(rest.includes("--reps") ? values.reps : 400),
    threads: Number(rest.includes("--threads") ? values.threads : 1),
  });
} else if (name === "service") {
  await benchService({
    model: values.model,
    workers: Number(values.workers),
    threads: Number(rest.includes("--threads") ? values.threads : 1),
    perStream: Number(values["per-stream"]),
    maxTokens: Number(values["max-tokens"]),
    transport: values.transport === "grpc" ? "grpc" : "connect",
  });
} else if (name === "cancel") {
  await benchCancel({ model: values.model, rounds: Number(values.rounds) });
} else if (name === "hostile") {
  await benchHostile({ model: values.model });
} else {
  console.error(
    "usage: npm run bench -- engine --model DIR | --real [--hidden 2048 --layers 16] [--contexts 200,600] [--precision fp32,int4] [--modes base,ttp-only,twig] [--tokens 48] [--threads 2] [--reps 2] [--provider cpu|cuda]\n       npm run bench -- engine [--hidden 2048] [--layers 16] [--context 600] [--precision fp32,int4] [--attention contrib,direct] [--threads 2] [--reps 9]\n       npm run bench -- int4 [--hidden 2048] [--layers 4] [--context 600] [--threads 2] [--reps 15]\n       npm run bench -- twig [--hidden 512] [--layers 16] [--grid 24] [--retain R-BAR] [--tokens 32] [--threads 2] [--reps 3]\n       npm run bench -- service [--model DIR] [--workers 1] [--threads 1] [--per-stream 4] [--max-tokens 64] [--transport connect|grpc]\n       npm run bench -- service --batch 32 [--model DIR] [--levels 1,4,16,32] [--modes base,ttp-only,twig] [--workers 1] [--threads 2] [--per-stream 2] [--max-tokens 48] [--pictures test|next-test] [--prefill-rows N] [--warmup 8] [--min-requests 16] [--repeat 1]\n       npm run bench -- batch [--model DIR] [--precision fp32] [--levels 16] [--modes twig] [--batch 32] [--threads 2] [--per-stream 2] [--max-tokens 48] [--draft-cap N] [--pictures test|next-test] [--prefill-rows N]\n       npm run bench -- segment [--model DIR] [--configs 1x1,1x3,8x1,8x2,8x3,16x2] [--past 80] [--reps 400] [--threads 1] [--against DIR]\n       npm run bench -- cancel [--model DIR] [--rounds 60]\n       npm run bench -- hostile [--model DIR]",
  );
  process.exit(2);
}
