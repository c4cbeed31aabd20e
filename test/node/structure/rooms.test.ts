/**
 * The rooms of the code and what each may import, checked from the imports themselves (the
 * README files of gpu-service/src/server, gpu-service/src/engine, gpu-service/tools and edge/src
 * say the same in words). A broken rule fails here with the chain of imports that breaks it. The
 * same rules first run on a made-up tree that breaks each of them once, so that a rule that could
 * never fail fails too.
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { findCycles, type ImportGraph, importsOf, readImportGraph, runtimeChain } from "../../support/import-graph.js";

const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));
const ENGINE = "gpu-service/src/engine/";
const SERVER = "gpu-service/src/server/";
const TOOLS = "gpu-service/tools/";
const EDGE = "edge/src/";
/** The API's names of the proto's enums: plain data generated from the contract (proto/enum-names.ts), no wire code. */
const NAMES = "@twigserve/proto/twigvlm/v1/names.js";
const under =
  (...folders: string[]) =>
  (name: string) =>
    folders.some((f) => name.startsWith(f));
const packages =
  (...names: string[]) =>
  (name: string) =>
    names.some((n) => name === n || name.startsWith(`${n}/`));

interface Rule {
  rule: string;
  /** The files the rule is about. */
  files: (file: string) => boolean;
  /** What they may not import. */
  forbidden: (name: string) => boolean;
  /** `direct`: no import of it at all; `runtime`: not that, and not loaded through any chain of imports either. */
  reach: "direct" | "runtime";
}

const RULES: Rule[] = [
  {
    rule: "the engine never imports the server, the tools or the service's entry point",
    files: under(ENGINE),
    forbidden: (n) => under(SERVER, TOOLS)(n) || n === "gpu-service/src/main.ts",
    reach: "direct",
  },
  {
    rule: "the engine knows nothing of the wire (no Connect, no service protocol but the enums' names)",
    files: under(ENGINE),
    forbidden: (n) =>
      n !== NAMES &&
      packages(
        "@connectrpc/connect",
        "@connectrpc/connect-node",
        "@twigserve/proto/twigvlm",
        "@twigserve/proto/grpc",
      )(n),
    reach: "direct",
  },
  {
    rule: "the server never touches ONNX, not even through the engine's modules",
    files: under(SERVER),
    forbidden: (n) =>
      packages("onnxruntime-node")(n) || under(`${ENGINE}onnx/`, `${ENGINE}runtime/`, `${ENGINE}checkpoint/`)(n),
    reach: "runtime",
  },
  {
    rule: "nothing in the service imports a tool",
    files: under("gpu-service/src/"),
    forbidden: under(TOOLS),
    reach: "runtime",
  },
  {
    rule: "the edge never touches tensors nor the GPU service's code",
    files: under(EDGE),
    forbidden: (n) => n.startsWith("gpu-service/") || packages("onnxruntime-node", "sharp", "@twigserve/proto/onnx")(n),
    reach: "runtime",
  },
  {
    rule: "the graph builder never knows about requests",
    files: under(`${ENGINE}onnx/`),
    forbidden: (n) =>
      [`${ENGINE}plan.ts`, `${ENGINE}events.ts`, `${ENGINE}engine.ts`].includes(n) ||
      under(SERVER, `${ENGINE}decoding/`)(n) ||
      packages("@twigserve/proto/twigvlm")(n),
    reach: "runtime",
  },
  {
    rule: "the decoding algorithms import nothing but each other and the enums' names (no bytes off the wire, no ONNX)",
    files: under(`${ENGINE}decoding/`),
    forbidden: (n) => !n.startsWith(`${ENGINE}decoding/`) && n !== NAMES,
    reach: "direct",
  },
  {
    rule: "the pruners score numbers: they import nothing but each other, the decoding algorithms and the engine's errors",
    files: under(`${ENGINE}pruning/`),
    forbidden: (n) => !under(`${ENGINE}pruning/`, `${ENGINE}decoding/`)(n) && n !== `${ENGINE}errors.ts`,
    reach: "direct",
  },
];

/** Every way the graph breaks a rule, as "rule: file -> ... -> import", and how many files each rule was about. */
function violations(graph: ImportGraph, rules: Rule[]): { broken: string[]; checked: number[] } {
  const broken: string[] = [];
  const checked: number[] = [];
  for (const r of rules) {
    const files = [...graph.keys()].filter(r.files);
    checked.push(files.length);
    for (const file of files) {
      const direct = (graph.get(file) ?? []).find((edge) => r.forbidden(edge.to));
      const chain = direct
        ? [file, direct.to]
        : r.reach === "runtime"
          ? runtimeChain(graph, file, r.forbidden)
          : undefined;
      if (chain) broken.push(`${r.rule}: ${chain.join(" -> ")}`);
    }
  }
  for (const cycle of findCycles(graph)) broken.push(`import loop: ${cycle.join(" -> ")}`);
  return { broken, checked };
}

const edges = (...list: [string, boolean?][]) => list.map(([to, typeOnly]) => ({ to, typeOnly: typeOnly === true }));

describe("rooms", () => {
  it("reads every kind of import a file can make, and which are erased when it runs", () => {
    const found = importsOf(
      [
        'import { a } from "./a.js";',
        'import type { B } from "../b.js";',
        'import { type C } from "./c.js";',
        'export { d } from "./d.js";',
        'export type { E } from "pkg-e";',
        'const f = await import("./f.js");',
        'let g: import("./g.js").G;',
        'import "./h.js";',
      ].join("\n"),
    );
    expect(found).toEqual([
      { specifier: "./a.js", typeOnly: false },
      { specifier: "../b.js", typeOnly: true },
      { specifier: "./c.js", typeOnly: false },
      { specifier: "./d.js", typeOnly: false },
      { specifier: "pkg-e", typeOnly: true },
      { specifier: "./f.js", typeOnly: false },
      { specifier: "./g.js", typeOnly: true },
      { specifier: "./h.js", typeOnly: false },
    ]);
  });

  it("catches each rule broken, and an import loop, in a made-up tree", () => {
    const made: ImportGraph = new Map([
      [`${ENGINE}local-engine.ts`, edges([`${SERVER}validate.ts`, true], ["@connectrpc/connect"])],
      [`${SERVER}validate.ts`, edges([`${ENGINE}image.ts`])],
      [`${ENGINE}image.ts`, edges([`${ENGINE}runtime/session.ts`])],
      [`${ENGINE}runtime/session.ts`, edges(["onnxruntime-node"])],
      [`${SERVER}scheduler.ts`, edges([`${ENGINE}worker-host.ts`])],
      [`${ENGINE}worker-host.ts`, edges([`${ENGINE}runtime/session.ts`, true], [`${TOOLS}bench/main.ts`])],
      [`${TOOLS}bench/main.ts`, []],
      [`${EDGE}chat/request.ts`, edges([`${EDGE}chat/modes.ts`])],
      [`${EDGE}chat/modes.ts`, edges(["gpu-service/src/engine/plan.ts", true])],
      [`${ENGINE}plan.ts`, edges([NAMES, true])],
      [`${ENGINE}onnx/decoder.ts`, edges([`${ENGINE}onnx/layers.ts`])],
      [`${ENGINE}onnx/layers.ts`, edges([`${ENGINE}onnx/decoder.ts`, true], [`${ENGINE}plan.ts`])],
      [`${ENGINE}decoding/ttp.ts`, edges([NAMES], [`${ENGINE}image-format.ts`])],
      [`${ENGINE}image-format.ts`, []],
      [`${ENGINE}pruning/fastv.ts`, edges([`${ENGINE}pruning/pruner.ts`, true], [`${ENGINE}runtime/session.ts`])],
    ]);
    const { broken } = violations(made, RULES);
    for (const r of RULES)
      expect(
        broken.some((b) => b.startsWith(`${r.rule}:`)),
        r.rule,
      ).toBe(true);
    const [, , onnx, tools, edge, builder] = RULES.map((r) => r.rule);
    // through other files, and only along imports that load something
    // the enums' names are the one piece of the protocol the engine and the decoding algorithms may read
    expect(broken.filter((b) => b.includes(NAMES))).toEqual([]);
    expect(broken).toContain(`${onnx}: ${SERVER}validate.ts -> ${ENGINE}image.ts -> ${ENGINE}runtime/session.ts`);
    expect(broken.filter((b) => b.startsWith(`${onnx}: ${SERVER}scheduler.ts`))).toEqual([]);
    expect(broken).toContain(`${tools}: ${SERVER}scheduler.ts -> ${ENGINE}worker-host.ts -> ${TOOLS}bench/main.ts`);
    // a type-only import breaks a rule that forbids the import itself
    expect(broken).toContain(`${edge}: ${EDGE}chat/modes.ts -> gpu-service/src/engine/plan.ts`);
    // a loop counts even where one of its imports is only about types
    expect(broken).toContain(`${builder}: ${ENGINE}onnx/decoder.ts -> ${ENGINE}onnx/layers.ts -> ${ENGINE}plan.ts`);
    expect(broken).toContain(
      `import loop: ${ENGINE}onnx/decoder.ts -> ${ENGINE}onnx/layers.ts -> ${ENGINE}onnx/decoder.ts`,
    );
  });

  it("holds in the code: each room imports only what it may, and nothing imports in a loop", () => {
    const graph = readImportGraph(repoRoot, ["gpu-service/src", "gpu-service/tools", "edge/src"]);
    const { broken, checked } = violations(graph, RULES);
    console.log(`rooms: ${graph.size} files read; files under each rule: ${checked.join(", ")}`);
    expect(broken).toEqual([]);
    // every rule is about files that exist: a folder renamed away must not leave its rule checking nothing
    expect(checked).toHaveLength(RULES.length);
    for (const [i, count] of checked.entries()) expect(count, RULES[i].rule).toBeGreaterThan(0);
  });
});
