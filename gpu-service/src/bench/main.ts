/** `npm run bench -- <name> [--key value]...`: benchmarks that print tables. */
import { parseArgs } from "node:util";
import { benchEngine } from "./engine.js";

const [name, ...rest] = process.argv.slice(2);
const { values } = parseArgs({
  args: rest,
  options: {
    hidden: { type: "string", default: "1024" },
    layers: { type: "string", default: "8" },
    context: { type: "string", default: "600" },
    threads: { type: "string", default: "2" },
    reps: { type: "string", default: "9" },
  },
});
if (name === "engine") {
  await benchEngine({
    hidden: Number(values.hidden),
    layers: Number(values.layers),
    context: Number(values.context),
    threads: Number(values.threads),
    reps: Number(values.reps),
  });
} else {
  console.error("usage: npm run bench -- engine [--hidden 1024] [--layers 8] [--context 600] [--threads 2] [--reps 9]");
  process.exit(2);
}
