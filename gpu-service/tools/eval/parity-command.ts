/**
 * `npm run twig -- parity --model DIR [--fixture FILE] [--data DIR] [--provider cpu|cuda]`: checks the
 * engine against PyTorch's numbers for an exported checkpoint (see parity.ts) and
 * exits 1 when they disagree beyond the tolerances below.
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { checkParity, type ParityFixture, type ParityResult } from "./parity.js";

/** float32 on both sides, 32 layers, different operation order. */
export const LOGITS_TOLERANCE = 1e-3;
export const PIXEL_TOLERANCE = 1e-4;

export function parityFailures(r: ParityResult): string[] {
  const f: string[] = [];
  if (!r.inputIdsEqual) f.push("prompt token ids differ");
  if (r.pixelFirstMaxDiff > PIXEL_TOLERANCE) f.push(`pixels differ by ${r.pixelFirstMaxDiff}`);
  if (r.logitsRelError > LOGITS_TOLERANCE) f.push(`logits differ by ${r.logitsRelError.toExponential(2)}`);
  if (r.twigLogitsRelError > LOGITS_TOLERANCE) f.push(`twig logits differ by ${r.twigLogitsRelError.toExponential(2)}`);
  if (!r.greedyEqual) f.push(`greedy ${r.greedyIds.join(",")} != ${r.expectedGreedyIds.join(",")}`);
  return f;
}

export async function parityCommand(argv: string[], repoRoot: string, fail: (m: string) => never): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      fixture: { type: "string" },
      data: { type: "string" },
      provider: { type: "string", default: "cpu" },
    },
  });
  const provider = values.provider;
  if (provider !== "cpu" && provider !== "cuda") fail(`unknown --provider ${provider}; one of cpu, cuda`);
  const modelDir = resolve(values.model ?? join(repoRoot, "models", "demo"));
  const fixturePath = resolve(values.fixture ?? join(modelDir, "parity.json"));
  if (!existsSync(fixturePath)) fail(`no parity fixture at ${fixturePath} (write one with training/parity.py)`);
  const dataDir = resolve(values.data ?? join(repoRoot, "training", "data"));
  const fixture = JSON.parse(readFileSync(fixturePath, "utf8")) as ParityFixture;
  const results = await checkParity(modelDir, fixture, dataDir, { provider });
  console.log("| case | ids | pixels | logits rel. error | twig logits rel. error | greedy equal |");
  console.log("|---|---|---|---|---|---|");
  let bad = 0;
  for (const r of results) {
    console.log(
      `| ${r.image} "${r.question}" | ${r.inputIdsEqual ? "equal" : "DIFFER"} | ${r.pixelFirstMaxDiff.toExponential(1)} | ${r.logitsRelError.toExponential(2)} | ${r.twigLogitsRelError.toExponential(2)} | ${r.greedyEqual ? `yes (${r.greedyIds.length} tokens)` : "NO"} |`,
    );
    const f = parityFailures(r);
    if (f.length) {
      bad++;
      console.error(`parity: ${r.image}: ${f.join("; ")}`);
    }
  }
  if (bad) fail(`${bad} of ${results.length} cases disagree with PyTorch`);
  console.log(`parity: all ${results.length} cases agree with PyTorch (logits within ${LOGITS_TOLERANCE})`);
}
