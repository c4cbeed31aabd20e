/**
 * `npm run twig -- eval [--model DIR] [--data DIR] [--split test|next-test|video-test] [--limit N] [--out DIR] [--modes a,b]
 *  [--compare FILE] [--score-source last-token|all-text]`: runs the held-out split through every mode
 * and budget, prints the table, and writes eval.json, eval.md and accuracy-vs-budget.{svg,png} into
 * --out. With --compare (an earlier eval.json, such as the one committed beside a model card) it also
 * prints both runs side by side and exits 1 if a number that greedy decoding makes deterministic
 * differs. --score-source picks how the pruning modes score visual tokens: attention from the last
 * prompt token (the released code, the default) or summed over all text tokens (the paper's formula).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { isScoreSource, SCORE_SOURCES } from "../../src/engine/decoding/ttp.js";
import { LocalEngine } from "../../src/engine/local-engine.js";
import type { Mode } from "../../src/engine/plan.js";
import { MODES } from "../../src/engine/twig/modes.js";
import { compareEvals } from "./compare.js";
import { curvesSvg, descriptionTable, kindTable, markdownTable } from "./report.js";
import { type EvalResult, readSplit, runEval } from "./run.js";

/** The default held-out split of each architecture (`model_type`) other than LLaVA-1.5's `test`. */
const SPLIT_OF: Record<string, string> = { llava_next: "next-test", llava_next_video: "video-test" };

export async function evalCommand(argv: string[], repoRoot: string, fail: (m: string) => never): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      data: { type: "string" },
      split: { type: "string" },
      limit: { type: "string" },
      out: { type: "string" },
      modes: { type: "string" },
      threads: { type: "string", default: "0" },
      compare: { type: "string" },
      "score-source": { type: "string" },
    },
  });
  const modelDir = resolve(values.model ?? join(repoRoot, "models", "demo"));
  if (!existsSync(join(modelDir, "config.json"))) fail(`${modelDir} is not a model directory (no config.json)`);
  const dataDir = resolve(values.data ?? join(repoRoot, "training", "data"));
  // a LLaVA-NeXT or NeXT-Video model's held-out split is its world's (training/gen_data.py --world next|video)
  const modelType = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")).model_type;
  const split = values.split ?? SPLIT_OF[modelType] ?? "test";
  if (!existsSync(join(dataDir, `${split}.jsonl`)))
    fail(
      `no ${split} split in ${dataDir} (make one with: /usr/bin/python3 training/gen_data.py --split ${split} --out ${dataDir})`,
    );
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0))
    fail(`--limit must be a positive integer, got ${values.limit}`);
  const modes = (values.modes?.split(",") ?? MODES) as Mode[];
  for (const m of modes) if (!MODES.includes(m)) fail(`unknown mode ${m}; one of ${MODES.join(", ")}`);
  if (!modes.includes("base")) fail("--modes must include base (every ratio is relative to it)");
  const scoreSource = values["score-source"];
  if (scoreSource !== undefined && !isScoreSource(scoreSource))
    fail(`--score-source must be ${SCORE_SOURCES.join(" or ")}, got ${scoreSource}`);
  const outDir = resolve(values.out ?? join(modelDir, "eval"));
  let committed: EvalResult | undefined;
  if (values.compare) {
    if (!existsSync(values.compare)) fail(`--compare: no such file ${values.compare}`);
    committed = JSON.parse(readFileSync(values.compare, "utf8")) as EvalResult;
    if (resolve(values.compare) === join(outDir, "eval.json"))
      fail("--compare names the file this run would overwrite: give --out another directory");
  }
  const scenes = readSplit(dataDir, split, limit);
  const engine = await LocalEngine.load(modelDir, { threads: Number(values.threads) });
  console.error(`eval: ${scenes.length} ${split} scenes, modes ${modes.join(", ")}, model ${modelDir}`);
  const started = Date.now();
  const result = await runEval(
    engine,
    scenes,
    dataDir,
    modes,
    (done, total) => {
      if (done % 10 === 0 || done === total) {
        const eta = ((Date.now() - started) / done) * (total - done);
        console.error(`eval: ${done}/${total} scenes, about ${Math.round(eta / 1000)} s left`);
      }
    },
    scoreSource,
  );
  await engine.close();
  result.split = split;
  const table = markdownTable(result);
  const byKind = kindTable(result);
  const descriptions = descriptionTable(result);
  console.log(
    `${table}\nShort-answer accuracy by question kind:\n\n${byKind}\nDescriptions scored three ways:\n\n${descriptions}`,
  );
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "eval.json"), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(
    join(outDir, "eval.md"),
    `# Evaluation of ${result.model} on ${split} (${result.scenes} scenes, ${result.shortQuestions} short questions, ${result.scenes} descriptions)\n\n${scoring(result)}${table}\n## Short-answer accuracy by question kind\n\n${byKind}\n## Descriptions scored three ways\n\nAttributes keyed by the place each named object is put at (the table above), attributes under the best one-to-one pairing of named and true objects (a place is then one attribute among four), and objects named with all four attributes right.\n\n${descriptions}`,
  );
  const svg = curvesSvg(result);
  writeFileSync(join(outDir, "accuracy-vs-budget.svg"), svg);
  await sharp(Buffer.from(svg)).png().toFile(join(outDir, "accuracy-vs-budget.png"));
  console.error(
    `eval: wrote eval.json, eval.md and accuracy-vs-budget.{svg,png} to ${outDir} in ${result.seconds.toFixed(0)} s`,
  );
  if (committed) {
    const c = compareEvals(committed, result);
    console.log(`\nAgainst ${values.compare}:\n\n${c.table}`);
    console.log(
      c.accuracyMismatches.length
        ? `NOT reproduced: deterministic numbers differ for ${c.accuracyMismatches.join(", ")}`
        : "Reproduced: every accuracy, description score, acceptance rate and lossless check is equal.",
    );
    if (c.speedOutliers.length)
      console.log(`RelSpd (long) moved by more than 25% for ${c.speedOutliers.join(", ")} (speed depends on load).`);
    if (c.accuracyMismatches.length) process.exitCode = 1;
  }
}

/** The markdown's line on how the pruning modes scored visual tokens (TWIGVLM.md's TTP step 2). */
function scoring(r: EvalResult): string {
  if (!r.scoreSource) return "";
  const how =
    r.scoreSource === "all-text"
      ? "the attention all text tokens pay them (the paper's formula)"
      : "the attention the last prompt token pays them (the released code's)";
  return `The pruning modes (TTP in \`twig\` and \`ttp-only\`, and \`fastv\`) scored visual tokens by ${how}.\n\n`;
}
