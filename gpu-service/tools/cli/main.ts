/**
 * The TwigServe command line (`npm run twig -- <command>`):
 *   generate --model DIR (--image FILE | --video FILE | --frame FILE...) --prompt TEXT [--mode twig|base|ttp-only|ssd-only|fastv|random|visionzip]
 *            [--twig DIR (default: the model's own twig/)] [--retain R-BAR] [--max-tokens N] [--temperature T]
 *            [--top-p P] [--seed S] [--stop TEXT]... [--trace FILE] [--precision fp32|fp16|int4]
 *            [--attention auto|contrib|direct|plain] [--provider cpu|cuda]
 *   make-tiny --out DIR [--seed N] [--layout hf|original] [--arch llava|next|next-video [--layers N]]
 *   make-tiny --out DIR --hidden N --layers N ... (a benchmark-size model: see USAGE and sized-model.ts)
 *   eval and parity: see gpu-service/tools/eval/command.ts and parity-command.ts
 * Each command is a function in COMMANDS at the end of this file.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { writeSafetensors } from "../../src/engine/checkpoint/safetensors.js";
import { SCORE_SOURCES } from "../../src/engine/decoding/ttp.js";
import { LocalEngine } from "../../src/engine/local-engine.js";
import {
  ATTENTION_CHOICES,
  type AttentionChoice,
  EXECUTION_PROVIDERS,
  type ExecutionProvider,
  PRECISIONS,
  type Precision,
} from "../../src/engine/options.js";
import type { GenerateParams, Mode } from "../../src/engine/plan.js";
import { MODES } from "../../src/engine/twig/modes.js";
import { evalCommand } from "../eval/command.js";
import { parityCommand } from "../eval/parity-command.js";
import { DEMO_VISION, llamaShape, writeSizedModel } from "../make-tiny/sized-model.js";
import { writeTinyModel } from "../make-tiny/tiny-model.js";
import { writeTinyNextModel } from "../make-tiny/tiny-next.js";

const repoRoot = resolve(dirname(new URL(import.meta.url).pathname), "../../..");

function fail(message: string): never {
  console.error(`twig: ${message}`);
  process.exit(2);
}

async function generate(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      twig: { type: "string" },
      image: { type: "string" },
      video: { type: "string" },
      frame: { type: "string", multiple: true },
      prompt: { type: "string" },
      mode: { type: "string", default: "twig" },
      retain: { type: "string" },
      "max-tokens": { type: "string", default: "64" },
      temperature: { type: "string", default: "0" },
      "top-p": { type: "string", default: "1" },
      seed: { type: "string" },
      stop: { type: "string", multiple: true },
      trace: { type: "string" },
      threads: { type: "string", default: "0" },
      precision: { type: "string", default: "fp32" },
      attention: { type: "string", default: "auto" },
      provider: { type: "string", default: "cpu" },
    },
  });
  const modelDir = resolve(values.model ?? join(repoRoot, "models", "demo"));
  if (!existsSync(join(modelDir, "config.json"))) {
    fail(
      values.model
        ? `${modelDir} is not a model directory (no config.json)`
        : "no --model given and models/demo does not exist yet; make one with `npm run twig -- make-tiny --out DIR`",
    );
  }
  const media = [values.image, values.video, ...(values.frame ?? [])].filter((f) => f !== undefined);
  if (media.length === 0) fail("--image FILE (or --video FILE, or --frame FILE for each frame) is required");
  if ([values.image, values.video, values.frame].filter((x) => x !== undefined).length > 1)
    fail("give one of --image, --video and --frame");
  for (const f of media) if (!existsSync(f)) fail(`${f} does not exist`);
  const mode = values.mode as Mode;
  if (!MODES.includes(mode)) fail(`unknown --mode ${values.mode}; one of ${MODES.join(", ")}`);
  const num = (name: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) fail(`--${name} must be a number, got "${v}"`);
    return n;
  };
  const precision = values.precision as Precision;
  if (!PRECISIONS.includes(precision)) fail(`unknown --precision ${values.precision}; one of ${PRECISIONS.join(", ")}`);
  const attention = values.attention as AttentionChoice;
  if (!ATTENTION_CHOICES.includes(attention))
    fail(`unknown --attention ${values.attention}; one of ${ATTENTION_CHOICES.join(", ")}`);
  const provider = values.provider as ExecutionProvider;
  if (!EXECUTION_PROVIDERS.includes(provider))
    fail(`unknown --provider ${values.provider}; one of ${EXECUTION_PROVIDERS.join(", ")}`);
  const engine = await LocalEngine.load(modelDir, {
    provider,
    twigDir: values.twig ? resolve(values.twig) : undefined,
    threads: num("threads", values.threads),
    precision,
    attention,
  }).catch((err: Error) => fail(`cannot load ${modelDir}: ${err.message}`));
  let text = "";
  const rawPrompt = /<image>|<video>/.test(values.prompt ?? "");
  let params: GenerateParams | undefined;
  try {
    // planned as the service plans a request (plan-request.ts): the trace records this plan
    params = await engine.plan({
      image: values.image ? readFileSync(values.image) : undefined,
      video: values.image
        ? undefined
        : values.video
          ? { data: readFileSync(values.video) }
          : { frames: (values.frame ?? []).map((f) => readFileSync(f)) },
      prompt: rawPrompt ? values.prompt : undefined,
      messages: rawPrompt ? undefined : [{ role: "user", content: values.prompt ?? "describe the picture" }],
      maxTokens: num("max-tokens", values["max-tokens"]) ?? 64,
      temperature: num("temperature", values.temperature) ?? 0,
      topP: num("top-p", values["top-p"]) ?? 1,
      seed: num("seed", values.seed),
      stop: values.stop ?? [],
      mode,
      retainBudget: num("retain", values.retain),
    });
    await engine.generate(params, (e) => {
      if (e.type === "delta") {
        text += e.text;
        process.stdout.write(e.text);
      }
      if (e.type === "finished") {
        const s = e.stats;
        console.log(
          `\n[${mode}] ${e.usage.completionTokens} tokens, finish ${e.finishReason}; prefill ${s.prefillMs.toFixed(1)} ms, ` +
            `${s.tokensPerSecond.toFixed(1)} tok/s; visual tokens ${s.visualTokensKept}/${s.visualTokens}; ` +
            `drafted ${s.draftedTokens}, accepted ${s.acceptedTokens} (${(s.acceptanceRate * 100).toFixed(1)}%)`,
        );
      }
    });
  } catch (err) {
    await engine.close();
    fail((err as Error).message);
  }
  const trace = engine.lastTrace;
  if (values.trace && trace && params) {
    const { plan } = params;
    const traceFile = resolve(values.trace);
    const pixelValuesFile = traceFile.replace(/(\.json)?$/, ".pixel_values.safetensors");
    const size = engine.weights.config.vision.imageSize;
    const views = trace.pixelValues.length / (3 * size * size);
    writeSafetensors(pixelValuesFile, { pixel_values: { shape: [views, 3, size, size], data: trace.pixelValues } });
    const twig = engine.twigWeights;
    const r = trace.result;
    writeFileSync(
      traceFile,
      JSON.stringify(
        {
          modelDir,
          twigDir: engine.twigDir ?? null,
          mode,
          inputIds: trace.inputIds,
          imagePosition: trace.imagePosition,
          numVisualTokens: r.visualTokens,
          pixelValuesFile,
          // the picture's (height, width) or the frames'; each view's or frame's grid of visual tokens
          visual: {
            kind: trace.visual.input.kind,
            size: trace.visual.size,
            views,
            frameIndices: trace.visual.frameIndices ?? null,
            grids: trace.visual.grids,
          },
          keptVisualIndices: r.keptVisualIndices,
          // the plan as applied: R-bar and K_f null in the modes that keep every visual token, the scorer
          // null in the modes that score no visual token by attention, delta and theta in those that do not draft
          retainBudget: plan.retainBudget,
          scoreSource: plan.scoreSource,
          R: plan.keptVisualTokens,
          draftLength: plan.draft?.length ?? null,
          draftThreshold: plan.draft?.threshold ?? null,
          K: twig?.k ?? null,
          T: twig?.t ?? null,
          finalWipeLayer: plan.retainBudget === null ? null : (twig?.finalWipeLayer ?? null),
          temperature: num("temperature", values.temperature) ?? 0,
          outputIds: r.outputIds,
          text,
          steps: r.steps,
        },
        null,
        2,
      ),
    );
  }
  await engine.close();
}

/** The size flags of make-tiny: any of them makes a sized model (sized-model.ts) instead of the tiny test model. */
const SIZE_FLAGS = [
  "hidden",
  "layers",
  "heads",
  "kv-heads",
  "intermediate",
  "vocab",
  "max-positions",
  "vision-hidden",
  "vision-layers",
  "vision-heads",
  "vision-intermediate",
  "vision-image-size",
  "vision-patch-size",
  "twig-k",
  "twig-t",
  "final-wipe",
] as const;

function makeTiny(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: "string" },
      seed: { type: "string", default: "0" },
      layout: { type: "string", default: "hf" },
      ...Object.fromEntries(SIZE_FLAGS.map((f) => [f, { type: "string" as const }])),
      arch: { type: "string", default: "llava" },
    },
  });
  if (!values.out) fail("--out DIR is required");
  if (values.layout !== "hf" && values.layout !== "original")
    fail(`--layout must be hf or original, got ${values.layout}`);
  const arch = values.arch;
  if (arch !== "llava" && arch !== "next" && arch !== "next-video")
    fail(`--arch must be llava, next or next-video, got ${arch}`);
  const given = values as Record<string, string | undefined>;
  if (arch !== "llava") {
    if (values.layout !== "hf") fail("LLaVA-NeXT models are written in the HF layout only");
    const other = SIZE_FLAGS.find((f) => f !== "layers" && given[f] !== undefined);
    if (other) fail(`--${other} makes LLaVA checkpoints only; --arch ${arch} takes --layers alone`);
    const layers = given.layers === undefined ? 8 : Number(given.layers);
    if (!(Number.isInteger(layers) && layers >= 4))
      fail(`--layers must be an integer of at least 4, got ${given.layers}`);
    writeTinyNextModel(resolve(values.out), Number(values.seed), arch, layers);
    const name = arch === "next" ? "LLaVA-NeXT" : "LLaVA-NeXT-Video";
    console.log(
      `wrote a tiny random ${name} (${layers} layers, seed ${values.seed}) with its twig to ${resolve(values.out)}`,
    );
    return;
  }
  if (SIZE_FLAGS.some((f) => given[f] !== undefined)) {
    if (values.layout !== "hf") fail("sized models are written in the hf layout only");
    const int = (name: string, fallback: number) => {
      const v = given[name];
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!(Number.isInteger(n) && n > 0)) fail(`--${name} must be a positive integer, got "${v}"`);
      return n;
    };
    const hidden = int("hidden", 2048);
    const optional = (name: string) => (given[name] === undefined ? undefined : int(name, 0));
    const shape = llamaShape(hidden, int("layers", 16), {
      heads: optional("heads"),
      kvHeads: optional("kv-heads"),
      intermediate: optional("intermediate"),
    });
    const out = resolve(values.out);
    const t0 = performance.now();
    try {
      const { parameters } = writeSizedModel(out, {
        text: {
          ...shape,
          maxPositionEmbeddings: int("max-positions", 1024),
          vocabSize: given.vocab === undefined ? undefined : int("vocab", 0),
        },
        vision: {
          hiddenSize: int("vision-hidden", DEMO_VISION.hiddenSize),
          numLayers: int("vision-layers", DEMO_VISION.numLayers),
          numHeads: int("vision-heads", DEMO_VISION.numHeads),
          intermediateSize: int("vision-intermediate", DEMO_VISION.intermediateSize),
          imageSize: int("vision-image-size", DEMO_VISION.imageSize),
          patchSize: int("vision-patch-size", DEMO_VISION.patchSize),
        },
        twig: {
          k: int("twig-k", 2),
          t: int("twig-t", 3),
          finalWipeLayer: given["final-wipe"] === undefined ? undefined : int("final-wipe", 0),
        },
        seed: Number(values.seed),
        tokenizerDir: join(repoRoot, "models", "demo"),
      });
      console.log(
        `wrote a random LLaVA of ${(parameters / 1e6).toFixed(1)}M parameters (hidden ${hidden}, ${shape.numLayers} layers, seed ${values.seed}) with its twig to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    } catch (err) {
      fail((err as Error).message);
    }
    return;
  }
  writeTinyModel(resolve(values.out), Number(values.seed), values.layout);
  console.log(
    `wrote a tiny random LLaVA (${values.layout} layout, seed ${values.seed}) with its twig to ${resolve(values.out)}`,
  );
}

const USAGE = `usage: npm run twig -- generate --model DIR (--image FILE | --video FILE | --frame FILE...) --prompt TEXT [--mode twig] [--trace FILE] [--precision fp32|fp16|int4] [--attention auto|contrib|direct|plain] [--provider cpu|cuda]
       npm run twig -- make-tiny --out DIR [--seed N] [--layout hf|original] [--arch llava|next|next-video [--layers N]]
       npm run twig -- make-tiny --out DIR [--hidden 2048] [--layers 16] [--heads H/64] [--kv-heads HEADS] [--intermediate 11H/4]
                        [--vocab (the demo tokenizer's)] [--max-positions 1024] [--vision-hidden 128] [--vision-layers 5] [--vision-heads 4]
                        [--vision-intermediate 512] [--vision-image-size 96] [--vision-patch-size 8] [--twig-k 2] [--twig-t 3] [--final-wipe 3L/4]
       npm run twig -- eval [--model DIR] [--data DIR] [--split test|next-test|video-test] [--limit N] [--out DIR] [--modes a,b] [--compare FILE] [--score-source ${SCORE_SOURCES.join("|")}]
       npm run twig -- parity [--model DIR] [--fixture FILE] [--data DIR]`;

/** Command name → its function (argv after the name). */
const COMMANDS: Record<string, (argv: string[]) => void | Promise<void>> = {
  generate,
  "make-tiny": makeTiny,
  eval: (argv) => evalCommand(argv, repoRoot, fail),
  parity: (argv) => parityCommand(argv, repoRoot, fail),
};

const [command, ...rest] = process.argv.slice(2);
if (command === undefined || !Object.hasOwn(COMMANDS, command) || rest.includes("--help") || rest.includes("-h"))
  fail(USAGE);
try {
  await COMMANDS[command](rest);
} catch (e) {
  // parseArgs' own errors (an unknown option, a value missing) are the user's: say so without a stack
  const code = (e as { code?: string }).code;
  if (code?.startsWith("ERR_PARSE_ARGS_")) fail(`${(e as Error).message}\n${USAGE}`);
  throw e;
}
