/**
 * `npm run twig -- parity --model DIR [--fixture FILE] [--data DIR] [--provider cpu|cuda]`: checks the
 * engine against PyTorch's numbers for an exported checkpoint (see parity.ts) and
 * exits 1 when they disagree beyond the tolerances below.
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { EXECUTION_PROVIDERS, type ExecutionProvider } from "../../src/engine/options.js";
import { checkParity, type ParityFixture, type ParityResult } from "./parity.js";
import { checkVariantParity, VARIANT_TOLERANCE, type VariantParityFixture } from "./parity-variants.js";

/** float32 on both sides, 32 layers, different operation order. */
export const LOGITS_TOLERANCE = 1e-3;
/**
 * The picture, over every value, in 8-bit steps. Measured on the demo fixture (96 px tower):
 * every picture the engine resizes itself (Pillow's bicubic, pad-resize.ts) is equal to the last
 * value but for a few rounding ties (at most 1 step); the JPEG is 0.001 steps off on average
 * (the decoders), the 8:1 panorama 0.031 (libvips shrinks it to three tower sizes first), each
 * at most 1 step in a value. For scale: libvips' own bicubic resize of the padded square was
 * 0.07-0.22 steps off on average and up to 6 in a value, and 2.9 on average when enlarging;
 * padding with the rounded mean colour (123, 117, 104) instead of LLaVA's int(mean * 255) adds up
 * to 0.6; stretching a non-square picture instead of padding it is 6-33 steps off on average.
 */
export const PIXEL_MEAN_STEPS = 0.25;
export const PIXEL_MAX_STEPS = 4;

export function parityFailures(r: ParityResult): string[] {
  const f: string[] = [];
  if (!r.inputIdsEqual) f.push("prompt token ids differ");
  const px = r.pixels;
  if (!(px.meanSteps <= PIXEL_MEAN_STEPS))
    f.push(`pixels differ by ${px.meanSteps.toFixed(3)} 8-bit steps on average (tolerance ${PIXEL_MEAN_STEPS})`);
  if (!(px.maxSteps <= PIXEL_MAX_STEPS))
    f.push(`a pixel value differs by ${px.maxSteps.toFixed(2)} 8-bit steps (tolerance ${PIXEL_MAX_STEPS})`);
  // the normalised sum, within what the mean tolerance allows (one step is at most 1/255/0.26 normalised)
  if (!(r.pixelSumDiff <= (px.values * PIXEL_MEAN_STEPS) / 255 / 0.26))
    f.push(`the normalised pixel sum differs by ${r.pixelSumDiff.toFixed(3)}`);
  if (r.logitsRelError > LOGITS_TOLERANCE) f.push(`logits differ by ${r.logitsRelError.toExponential(2)}`);
  if (r.twigLogitsRelError > LOGITS_TOLERANCE) f.push(`twig logits differ by ${r.twigLogitsRelError.toExponential(2)}`);
  if (!r.greedyEqual) f.push(`greedy ${r.greedyIds.join(",")} != ${r.expectedGreedyIds.join(",")}`);
  for (const s of r.selections) {
    if (s.mismatches.length === 0) continue;
    const which = `${s.method} ${s.scoreSource} at ${(s.prunedFraction * 100).toFixed(1)}% pruned`;
    if (s.engineR !== s.r) f.push(`${which}: the engine's budget gives R = ${s.engineR}, PyTorch's ${s.r}`);
    else if (s.engineKept !== s.r) f.push(`${which}: the engine keeps ${s.engineKept} visual tokens, PyTorch ${s.r}`);
    else f.push(`${which}: kept visual tokens differ from PyTorch's (${s.mismatches.join(",")})`);
  }
  return f;
}

/** Kept-index checks of all results: how many, how many equal, how many forgiven exact ties, the closest boundary. */
export function selectionSummary(results: ParityResult[]) {
  const all = results.flatMap((r) => r.selections);
  return {
    checked: all.length,
    equal: all.filter((s) => s.equal).length,
    ties: all.reduce((a, s) => a + s.ties, 0),
    smallestBoundaryGap: Math.min(...all.map((s) => s.boundaryGap)),
  };
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
  const provider = values.provider as ExecutionProvider;
  if (!EXECUTION_PROVIDERS.includes(provider))
    fail(`unknown --provider ${provider}; one of ${EXECUTION_PROVIDERS.join(", ")}`);
  const modelDir = resolve(values.model ?? join(repoRoot, "models", "demo"));
  const fixturePath = resolve(values.fixture ?? join(modelDir, "parity.json"));
  if (!existsSync(fixturePath)) fail(`no parity fixture at ${fixturePath} (write one with training/parity.py)`);
  const dataDir = resolve(values.data ?? join(repoRoot, "training", "data"));
  const parsed = JSON.parse(readFileSync(fixturePath, "utf8"));
  // a variant's fixture (training/parity_variants.py) names its variant and keeps its tensors beside it
  if (parsed.variant === "next" || parsed.variant === "video")
    return variantParity(modelDir, parsed as VariantParityFixture, fixturePath, dataDir, provider, fail);
  const fixture = parsed as ParityFixture;
  const results = await checkParity(modelDir, fixture, dataDir, { provider });
  console.log(
    "| case | ids | pixels: mean / max 8-bit steps | logits rel. error | twig logits rel. error | greedy equal | kept = PyTorch's |",
  );
  console.log("|---|---|---|---|---|---|---|");
  let bad = 0;
  for (const r of results) {
    const kept = `${r.selections.filter((s) => s.equal).length}/${r.selections.length}`;
    console.log(
      `| ${r.image} "${r.question}" | ${r.inputIdsEqual ? "equal" : "DIFFER"} | ${r.pixels.meanSteps.toFixed(3)} / ${r.pixels.maxSteps.toFixed(2)} | ${r.logitsRelError.toExponential(2)} | ${r.twigLogitsRelError.toExponential(2)} | ${r.greedyEqual ? `yes (${r.greedyIds.length} tokens)` : "NO"} | ${kept} |`,
    );
    const f = parityFailures(r);
    if (f.length) {
      bad++;
      console.error(`parity: ${r.image}: ${f.join("; ")}`);
    }
  }
  const s = selectionSummary(results);
  console.log(
    `kept visual tokens (TTP and FastV, each scorer, ${fixture.budgets.length} budgets): ${s.equal} of ${s.checked} equal to PyTorch's, ${s.ties} exact ties at the boundary forgiven, closest boundary gap ${s.smallestBoundaryGap.toExponential(2)} of the top score`,
  );
  if (bad) fail(`${bad} of ${results.length} cases disagree with PyTorch`);
  console.log(`parity: all ${results.length} cases agree with PyTorch (logits within ${LOGITS_TOLERANCE})`);
}

/** The LLaVA-NeXT and NeXT-Video fixtures: one table row per case, a line per disagreement. */
async function variantParity(
  modelDir: string,
  fixture: VariantParityFixture,
  fixturePath: string,
  dataDir: string,
  provider: "cpu" | "cuda",
  fail: (m: string) => never,
): Promise<void> {
  const results = await checkVariantParity(modelDir, fixture, fixturePath, dataDir, { provider });
  console.log(
    "| case | pixels | visual features rel. error | logits | twig logits | greedy | kept sets | pruned answers | budgets below the minimum |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  let bad = 0;
  for (const r of results) {
    console.log(
      `| ${r.id} | ${r.pixelMaxDiff.toExponential(1)} | ${r.featuresRelError.toExponential(2)} | ${r.logitsRelError.toExponential(2)} | ${r.twigLogitsRelError.toExponential(2)} | ${r.greedyTokens} tokens | ${r.keptChecked} | ${r.prunedChecked} | ${r.budgetsSkipped} |`,
    );
    if (r.failures.length) {
      bad++;
      console.error(`parity: ${r.id}: ${r.failures.join("; ")}`);
    }
  }
  if (bad) fail(`${bad} of ${results.length} ${fixture.variant} cases disagree with PyTorch`);
  console.log(
    `parity: all ${results.length} ${fixture.variant} cases agree with PyTorch (pixels within ${VARIANT_TOLERANCE.pixels}, visual features and logits within ${VARIANT_TOLERANCE.logits}, every kept set and greedy answer equal)`,
  );
}
