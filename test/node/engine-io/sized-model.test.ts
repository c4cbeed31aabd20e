/**
 * Benchmark-size checkpoints (`make-tiny --hidden ... --layers ...`): a directory the loader
 * reads as any LLaVA checkpoint, of the asked shape, with the twig grown the paper's way (its
 * layers are base layers K+1..K+T, its norm and head the base model's), and an LM head whose EOS
 * row is zero, so greedy decoding on the random weights runs to the token limit.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";
import { afterAll, describe, expect, it } from "vitest";
import { loadLlava, loadTwig } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { SafetensorsFile } from "../../../gpu-service/src/engine/checkpoint/safetensors.js";
import { LocalEngine } from "../../../gpu-service/src/engine/local-engine.js";

const repoRoot = join(import.meta.dirname, "../../..");
const dir = mkdtempSync(join(tmpdir(), "twig-sized-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("make-tiny with sizes", () => {
  const out = join(dir, "m");
  it("writes a checkpoint of the asked shape that loads, with its twig, and decodes to the token limit", async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        "--import",
        "tsx",
        join(repoRoot, "gpu-service/tools/cli/main.ts"),
        "make-tiny",
        "--out",
        out,
        ...["--hidden", "64", "--layers", "6", "--heads", "4", "--kv-heads", "2", "--intermediate", "96"],
        ...["--vision-hidden", "32", "--vision-layers", "2", "--vision-heads", "2", "--vision-intermediate", "48"],
        ...["--vision-image-size", "32", "--vision-patch-size", "8", "--twig-k", "2", "--twig-t", "2", "--seed", "4"],
      ],
      { cwd: repoRoot },
    );
    const w = loadLlava(out);
    const t = w.config.text;
    expect([t.hiddenSize, t.numLayers, t.numHeads, t.numKvHeads, t.intermediateSize]).toEqual([64, 6, 4, 2, 96]);
    expect(w.config.vision.imageSize / w.config.vision.patchSize).toBe(4);
    // the demo model's tokenizer: its vocabulary size and <image> id
    expect(t.vocabSize).toBe(82);
    expect(w.config.imageTokenIndex).toBe(81);
    // the parameter count printed is the one in the file
    const file = SafetensorsFile.open(join(out, "model.safetensors"));
    const count = [...file.entries.values()].reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0);
    file.close();
    expect(stdout).toContain(`${(count / 1e6).toFixed(1)}M parameters`);
    // EOS row of the LM head zero, every other row not
    const H = t.hiddenSize;
    const row = (r: number) => w.text.lmHead.data.subarray(r * H, (r + 1) * H);
    expect(row(t.eosTokenId).every((x) => x === 0)).toBe(true);
    let nonZero = 0;
    for (let r = 0; r < t.vocabSize; r++) if (r !== t.eosTokenId && row(r).some((x) => x !== 0)) nonZero++;
    expect(nonZero).toBe(t.vocabSize - 1);
    // the twig: base layers K+1..K+T, the base norm and head; K_f three quarters of the depth
    const twig = loadTwig(join(out, "twig"), w);
    expect([twig.k, twig.t, twig.finalWipeLayer]).toEqual([2, 2, 4]);
    expect(twig.layers[0].q.weight.data).toEqual(w.text.layers[2].q.weight.data);
    expect(twig.layers[1].down.weight.data).toEqual(w.text.layers[3].down.weight.data);
    expect(twig.lmHead.data).toEqual(w.text.lmHead.data);
    expect(w.text.layers[0].q.weight.data).not.toEqual(w.text.layers[1].q.weight.data);

    const engine = await LocalEngine.load(out, { threads: 1 });
    try {
      const image = await sharp({ create: { width: 32, height: 32, channels: 3, background: "#3080c0" } })
        .png()
        .toBuffer();
      let finished = 0;
      for (const mode of ["base", "twig"] as const)
        await engine.generate(
          await engine.plan({
            image,
            messages: [{ role: "user", content: "describe the picture" }],
            maxTokens: 24,
            temperature: 0,
            topP: 1,
            stop: [],
            mode,
          }),
          (e) => {
            if (e.type !== "finished") return;
            finished++;
            expect(e.finishReason).toBe("length");
            expect(e.usage.completionTokens).toBe(24);
          },
        );
      expect(finished).toBe(2);
    } finally {
      await engine.close();
    }
  }, 120_000);
});
