/** The evaluation's outputs: a markdown table and the accuracy-versus-budget curves as an SVG. */
import type { Mode } from "../../src/engine/plan.js";
import type { EvalResult, EvalRow } from "./run.js";

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const num = (x: number, d = 2) => x.toFixed(d);

export function markdownTable(r: EvalResult): string {
  const head =
    "| mode | visual tokens kept (mid layers) | short-answer accuracy | RelAcc | description precision | description recall | RelAcc (descriptions, F1) | RelSpd (long) | RelSpd (short) | tok/s (long) | acceptance | mean accepted length | lossless |\n" +
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  const row = (x: EvalRow) =>
    `| ${x.label} | ${num(x.visualTokensKept, 1)} / ${r.visualTokens} | ${pct(x.shortAccuracy)} (${x.shortCorrect}/${x.shortTotal}) | ${pct(x.relAcc)} | ${pct(x.descriptionPrecision)} | ${pct(x.descriptionRecall)} | ${pct(x.relAccDescription)} | ${num(x.relSpdLong)}x | ${num(x.relSpdShort)}x | ${num(x.tokensPerSecondLong, 1)} | ${x.acceptanceRate ? pct(x.acceptanceRate) : "–"} | ${x.meanAcceptedLength ? num(x.meanAcceptedLength) : "–"} | ${x.losslessMismatches === undefined ? "–" : x.losslessMismatches === 0 ? "equal" : `${x.losslessMismatches} differ`} |`;
  return `${head}${r.rows.map(row).join("\n")}\n`;
}

/**
 * Descriptions scored three ways, one row per configuration: attributes keyed by the place each
 * named object is put at (the headline score), attributes under the best pairing of named and true
 * objects (places counted as one attribute), and whole objects named with every attribute right.
 * Empty for a run written before the last two were measured.
 */
export function descriptionTable(r: EvalResult): string {
  const rows = r.rows.filter((x) => x.descriptionMatchedPrecision !== undefined);
  if (!rows.length) return "";
  const pr = (p = 0, q = 0) => `${pct(p)} / ${pct(q)}`;
  return [
    "| mode | attributes, keyed by place (P / R) | attributes, best pairing of objects (P / R) | whole objects right (P / R) |",
    "|---|---|---|---|",
    ...rows.map(
      (x) =>
        `| ${x.label} | ${pr(x.descriptionPrecision, x.descriptionRecall)} | ${pr(x.descriptionMatchedPrecision, x.descriptionMatchedRecall)} | ${pr(x.descriptionObjectsPrecision, x.descriptionObjectsRecall)} |`,
    ),
  ]
    .join("\n")
    .concat("\n");
}

/**
 * Short-answer accuracy per question kind: `base` and every configuration of the
 * given modes (by default twig and the baselines at the strongest pruning).
 */
export function kindTable(r: EvalResult, pick: (row: EvalRow) => boolean = defaultKindColumns): string {
  const cols = r.rows.filter((row) => row.mode === "base" || pick(row));
  const kinds = [...new Set(cols.flatMap((c) => Object.keys(c.shortByKind ?? {})))].sort();
  if (!kinds.length) return "";
  const cell = (c: EvalRow, k: string) => {
    const x = c.shortByKind?.[k];
    return x ? `${pct(x.correct / x.total)} (${x.correct}/${x.total})` : "–";
  };
  return [
    `| question kind | ${cols.map((c) => c.label).join(" | ")} |`,
    `|---|${cols.map(() => "---").join("|")}|`,
    ...kinds.map((k) => `| ${k} | ${cols.map((c) => cell(c, k)).join(" | ")} |`),
  ]
    .join("\n")
    .concat("\n");
}

function defaultKindColumns(row: EvalRow): boolean {
  return row.mode === "twig" || (row.pruned !== undefined && row.pruned > 0.88);
}

/** Each pruning mode's colour in the curves. */
const COLOURS: Partial<Record<Mode, string>> = {
  twig: "#2e7d32",
  "ttp-only": "#81c784",
  fastv: "#1565c0",
  random: "#9e9e9e",
  visionzip: "#ef6c00",
};

/** Short-answer accuracy against the fraction of visual tokens pruned, one line per pruning mode, base dashed. */
export function curvesSvg(r: EvalResult): string {
  const W = 640;
  const H = 420;
  const m = { l: 60, r: 150, t: 40, b: 50 };
  const x = (pruned: number) => m.l + ((pruned - 0.6) / (0.9 - 0.6)) * (W - m.l - m.r);
  const pruning = r.rows.filter((row) => row.pruned !== undefined);
  const lo = Math.max(0, Math.floor(Math.min(...pruning.map((p) => p.shortAccuracy), 1) * 10) / 10 - 0.1);
  const y = (acc: number) => m.t + ((1 - acc) / (1 - lo)) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="12" y="20" font-size="14">${r.model}: accuracy vs visual tokens pruned (${r.split}, ${r.shortQuestions} questions)</text>`,
  ];
  for (let a = Math.ceil(lo * 10) / 10; a <= 1.0001; a += 0.1) {
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(a)}" y2="${y(a)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 40}" y="${y(a) + 4}">${(a * 100).toFixed(0)}%</text>`);
  }
  for (const p of [2 / 3, 7 / 9, 8 / 9]) {
    parts.push(`<text x="${x(p) - 16}" y="${H - m.b + 20}">${(p * 100).toFixed(1)}%</text>`);
  }
  parts.push(`<text x="${W / 2 - 80}" y="${H - 10}">visual tokens pruned (R-bar = N/3, 2N/9, N/9)</text>`);
  const base = r.rows.find((row) => row.mode === "base");
  if (base) {
    parts.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${y(base.shortAccuracy)}" y2="${y(base.shortAccuracy)}" stroke="black" stroke-dasharray="6 4"/>`,
    );
    parts.push(`<text x="${W - m.r + 8}" y="${y(base.shortAccuracy) + 4}">base (unpruned)</text>`);
  }
  const modes = [...new Set(pruning.map((p) => p.mode))];
  modes.forEach((mode, i) => {
    const pts = pruning.filter((p) => p.mode === mode).sort((a, b) => (a.pruned ?? 0) - (b.pruned ?? 0));
    const colour = COLOURS[mode] ?? "#6a1b9a";
    const dash = mode === "ttp-only" ? ` stroke-dasharray="2 3"` : "";
    parts.push(
      `<polyline fill="none" stroke="${colour}" stroke-width="2"${dash} points="${pts.map((p) => `${x(p.pruned ?? 0)},${y(p.shortAccuracy)}`).join(" ")}"/>`,
    );
    for (const p of pts)
      parts.push(`<circle cx="${x(p.pruned ?? 0)}" cy="${y(p.shortAccuracy)}" r="3" fill="${colour}"/>`);
    parts.push(`<rect x="${W - m.r + 8}" y="${m.t + 20 * i + 30}" width="12" height="4" fill="${colour}"/>`);
    parts.push(`<text x="${W - m.r + 26}" y="${m.t + 20 * i + 36}">${mode}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}
