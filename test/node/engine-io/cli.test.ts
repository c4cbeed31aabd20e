/** The CLI as a person runs it: a real process on a tiny model, with a PNG, a JPEG and a fake image. */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SafetensorsFile } from "../../../gpu-service/src/engine/checkpoint/safetensors.js";
import { repoRoot } from "../../support/gpu-service.js";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "twig-cli-"));
const cli = (...args: string[]) =>
  run(process.execPath, ["--import", "tsx", join(repoRoot, "gpu-service/tools/cli/main.ts"), ...args], {
    cwd: repoRoot,
  });

beforeAll(async () => {
  await cli("make-tiny", "--out", join(dir, "tiny"), "--seed", "5");
  await cli("make-tiny", "--out", join(dir, "other"), "--seed", "6");
  const picture = sharp({ create: { width: 50, height: 40, channels: 3, background: { r: 20, g: 160, b: 60 } } });
  await picture.clone().png().toFile(join(dir, "a.png"));
  await picture.clone().jpeg().toFile(join(dir, "a.jpg"));
  writeFileSync(join(dir, "fake.png"), "this is a text file, not a picture\n");
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("npm run twig -- generate", () => {
  it("answers about a PNG and writes a trace that can be replayed", async () => {
    const trace = join(dir, "trace.json");
    const { stdout } = await cli(
      "generate",
      "--model",
      join(dir, "tiny"),
      "--image",
      join(dir, "a.png"),
      "--prompt",
      "what colour is the circle ?",
      "--max-tokens",
      "8",
      "--retain",
      "6",
      "--trace",
      trace,
    );
    expect(stdout).toMatch(/\[twig\] \d+ tokens, finish/);
    const t = JSON.parse(readFileSync(trace, "utf8"));
    expect(t).toMatchObject({
      modelDir: join(dir, "tiny"),
      mode: "twig",
      numVisualTokens: 16,
      K: 2,
      T: 2,
      finalWipeLayer: 6,
      retainBudget: 6,
      scoreSource: "last-token",
      R: 4,
      temperature: 0,
    });
    expect(t.inputIds[t.imagePosition]).toBe(
      JSON.parse(readFileSync(join(dir, "tiny", "config.json"), "utf8")).image_token_index,
    );
    expect(t.keptVisualIndices).toHaveLength(4);
    expect(t.outputIds.length).toBeGreaterThan(0);
    expect(t.twigDir).toBe(join(dir, "tiny", "twig")); // the model's own twig by default
    // replay: each verification emits its accepted drafts, then the full model's own token
    let at = 0;
    for (const s of t.steps as { drafted: number[]; accepted: number }[]) {
      expect(s.accepted).toBeLessThanOrEqual(s.drafted.length);
      expect(t.outputIds.slice(at, at + s.accepted)).toEqual(s.drafted.slice(0, s.accepted));
      at += s.accepted + 1;
    }
    expect(at).toBeGreaterThanOrEqual(t.outputIds.length);
    const pv = SafetensorsFile.open(t.pixelValuesFile);
    expect(pv.read("pixel_values").shape).toEqual([1, 3, 16, 16]);
    pv.close();
  });

  it("prunes by the vision tower's CLS attention in visionzip mode, with another twig given by --twig", async () => {
    const trace = join(dir, "trace-visionzip.json");
    const { stdout } = await cli(
      "generate",
      "--model",
      join(dir, "tiny"),
      "--twig",
      join(dir, "other", "twig"),
      "--image",
      join(dir, "a.png"),
      "--prompt",
      "how many shapes are there ?",
      "--mode",
      "visionzip",
      "--retain",
      "7",
      "--max-tokens",
      "4",
      "--trace",
      trace,
    );
    expect(stdout).toMatch(/\[visionzip\] \d+ tokens, .*visual tokens 6\/16/);
    const t = JSON.parse(readFileSync(trace, "utf8"));
    expect(t).toMatchObject({ mode: "visionzip", twigDir: join(dir, "other", "twig"), retainBudget: 7, R: 6, K: 2 });
    expect(t.scoreSource).toBeNull(); // visionzip scores by the vision tower's CLS attention, not by a scorer
    expect(t.finalWipeLayer).toBe(6);
    expect(t.steps).toEqual([]);
  });

  it("writes null budget and K_f in a mode that keeps every visual token", async () => {
    const trace = join(dir, "trace-ssd.json");
    await cli(
      "generate",
      "--model",
      join(dir, "tiny"),
      "--image",
      join(dir, "a.png"),
      "--prompt",
      "describe",
      "--mode",
      "ssd-only",
      "--max-tokens",
      "4",
      "--trace",
      trace,
    );
    const t = JSON.parse(readFileSync(trace, "utf8"));
    expect(t).toMatchObject({ mode: "ssd-only", retainBudget: null, finalWipeLayer: null, R: 16, K: 2, T: 2 });
    expect(t.scoreSource).toBeNull();
    expect(t.keptVisualIndices).toHaveLength(16);
    expect(t.steps.length).toBeGreaterThan(0);
  });

  it("answers about a JPEG in base mode", async () => {
    const { stdout } = await cli(
      "generate",
      "--model",
      join(dir, "tiny"),
      "--image",
      join(dir, "a.jpg"),
      "--prompt",
      "describe",
      "--mode",
      "base",
      "--max-tokens",
      "5",
    );
    expect(stdout).toMatch(/\[base\] \d+ tokens/);
  });

  it("refuses a text file renamed .png with a clear message", async () => {
    const err = await cli(
      "generate",
      "--model",
      join(dir, "tiny"),
      "--image",
      join(dir, "fake.png"),
      "--prompt",
      "x",
    ).catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/twig: the image is not a PNG, JPEG, WebP or GIF file/);
  });

  it("names the commands when given an unknown one", async () => {
    const err = await cli("toString").catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/usage: npm run twig -- generate/);
  });

  it("answers --help and an unknown option with the usage and exit 2, not a stack trace", async () => {
    const help = await cli("eval", "--help").catch((e) => e);
    expect(help.code).toBe(2);
    expect(help.stderr).toMatch(/npm run twig -- eval \[--model DIR\]/);
    const err = await cli("eval", "--limt", "5").catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/twig: Unknown option '--limt'/);
    expect(err.stderr).toMatch(/npm run twig -- parity/);
    expect(err.stderr).not.toMatch(/\n\s+at /);
  });

  it("runs int4 weights with --precision and refuses an unknown precision", async () => {
    const args = ["generate", "--model", join(dir, "tiny"), "--image", join(dir, "a.png"), "--prompt", "describe"];
    const { stdout } = await cli(...args, "--mode", "base", "--max-tokens", "4", "--precision", "int4");
    expect(stdout).toMatch(/\[base\] \d+ tokens/);
    const err = await cli(...args, "--precision", "int8").catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/unknown --precision int8; one of fp32, fp16, int4/);
  });

  it("says how to install CUDA when --provider cuda has no CUDA binaries (or runs, where they exist)", async () => {
    const args = ["generate", "--model", join(dir, "tiny"), "--image", join(dir, "a.png"), "--prompt", "describe"];
    const result = await cli(...args, "--mode", "base", "--max-tokens", "2", "--provider", "cuda").catch((e) => e);
    if (result.code === undefined) expect(result.stdout).toMatch(/\[base\] \d+ tokens/);
    else {
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/CUDA execution provider is not available.*ONNXRUNTIME_NODE_INSTALL=cuda12/);
    }
  });
});
