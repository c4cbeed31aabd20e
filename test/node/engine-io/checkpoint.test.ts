/**
 * Checkpoints written by the tiny-model generator in both LLaVA layouts load
 * back exactly; damaged files get errors that name the file and the problem;
 * the word-level tokenizer and the LLaVA v1 prompt format round-trip.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadLlava, loadTwig } from "../../../gpu-service/src/engine/checkpoint/llava-loader.js";
import { SafetensorsFile, writeSafetensors } from "../../../gpu-service/src/engine/checkpoint/safetensors.js";
import { TextCodec } from "../../../gpu-service/src/engine/tokenizer.js";
import { growTwig } from "../../../gpu-service/tools/make-tiny/grow-twig.js";
import { writeTinyModel } from "../../../gpu-service/tools/make-tiny/tiny-model.js";

const root = mkdtempSync(join(tmpdir(), "twig-ckpt-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("checkpoint loading", () => {
  for (const layout of ["hf", "original"] as const) {
    it(`loads the ${layout} layout exactly as written, with its twig`, () => {
      const dir = join(root, layout);
      const written = writeTinyModel(dir, 3, layout);
      const loaded = loadLlava(dir);
      expect(loaded.config).toEqual(written.config);
      expect(loaded.text.layers[5].down.weight).toEqual(written.text.layers[5].down.weight);
      expect(loaded.vision.layers[1].fc1.bias).toEqual(written.vision.layers[1].fc1.bias);
      expect(loaded.projector.linear2.weight).toEqual(written.projector.linear2.weight);
      expect(loaded.text.lmHead).toEqual(written.text.lmHead);
      const twig = loadTwig(join(dir, "twig"), loaded);
      expect(twig).toMatchObject({ k: 2, t: 2, finalWipeLayer: 6 });
      expect(twig.layers[0].q.weight).toEqual(growTwig(written, 2, 2, 6).layers[0].q.weight);
    });
  }

  it("reads fp16 and bf16 tensors as fp32", () => {
    const path = join(root, "half.safetensors");
    // 1.5 as f16 = 0x3e00; as bf16 = 0x3fc0; -2 as f16 = 0xc000, bf16 = 0xc000
    const header = JSON.stringify({
      a: { dtype: "F16", shape: [2], data_offsets: [0, 4] },
      b: { dtype: "BF16", shape: [2], data_offsets: [4, 8] },
    });
    const pad = " ".repeat((8 - (header.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length + pad.length));
    writeFileSync(
      path,
      Buffer.concat([
        len,
        Buffer.from(header + pad),
        Buffer.from(Uint16Array.of(0x3e00, 0xc000, 0x3fc0, 0xc000).buffer),
      ]),
    );
    const f = SafetensorsFile.open(path);
    expect(Array.from(f.read("a").data)).toEqual([1.5, -2]);
    expect(Array.from(f.read("b").data)).toEqual([1.5, -2]);
    f.close();
  });

  it("names the file and the problem for truncated files, bad headers, missing tensors and wrong shapes", () => {
    const good = join(root, "hf");
    const bad = join(root, "damaged");
    writeTinyModel(bad, 3, "hf");
    const weights = join(bad, "model.safetensors");
    const size = readFileSync(weights).length;
    truncateSync(weights, size - 100);
    expect(() => loadLlava(bad)).toThrow(
      /model\.safetensors: tensor ".*" ends at byte \d+ but the file has \d+ bytes \(truncated\?\)/,
    );

    writeFileSync(weights, Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("{not json at all")]));
    expect(() => loadLlava(bad)).toThrow(/header is not valid JSON/);
    writeFileSync(weights, Buffer.from([255, 255, 255, 255, 0, 0, 0, 0, 1, 2]));
    expect(() => loadLlava(bad)).toThrow(/bad safetensors header length/);

    copyFileSync(join(good, "model.safetensors"), weights);
    const f = SafetensorsFile.open(weights);
    const tensors = Object.fromEntries(
      [...f.entries.keys()].filter((n) => !n.includes("layers.7.mlp.up_proj")).map((n) => [n, f.read(n)]),
    );
    f.close();
    writeSafetensors(weights, tensors);
    expect(() => loadLlava(bad)).toThrow(/missing tensor "language_model\.model\.layers\.7\.mlp\.up_proj\.weight"/);

    const cfg = JSON.parse(readFileSync(join(bad, "config.json"), "utf8"));
    cfg.text_config.intermediate_size += 1;
    writeFileSync(join(bad, "config.json"), JSON.stringify(cfg));
    copyFileSync(join(good, "model.safetensors"), weights);
    expect(() => loadLlava(bad)).toThrow(/has shape \[\d+,\d+\], expected/);
    expect(() => loadLlava(join(root, "nowhere"))).toThrow(/no config\.json/);
  });

  it("reads the twig's default TTP scorer from its config, and names a bad one", () => {
    const base = loadLlava(join(root, "hf"));
    const config = join(root, "hf", "twig", "config.json");
    const written = JSON.parse(readFileSync(config, "utf8"));
    try {
      expect(loadTwig(join(root, "hf", "twig"), base).scoreSource).toBe("last-token"); // no key: the released code's
      writeFileSync(config, JSON.stringify({ ...written, ttp_score_source: "all-text" }));
      expect(loadTwig(join(root, "hf", "twig"), base).scoreSource).toBe("all-text");
      writeFileSync(config, JSON.stringify({ ...written, ttp_score_source: "first-token" }));
      expect(() => loadTwig(join(root, "hf", "twig"), base)).toThrow(/ttp_score_source must be .* got "first-token"/);
    } finally {
      writeFileSync(config, JSON.stringify(written));
    }
  });

  it("reads the twig's default pruned share from its config, and names a bad one", () => {
    const base = loadLlava(join(root, "hf"));
    const config = join(root, "hf", "twig", "config.json");
    const written = JSON.parse(readFileSync(config, "utf8"));
    try {
      expect(loadTwig(join(root, "hf", "twig"), base).defaultPrunedFraction).toBeUndefined();
      writeFileSync(config, JSON.stringify({ ...written, default_pruned_fraction: 2 / 3 }));
      expect(loadTwig(join(root, "hf", "twig"), base).defaultPrunedFraction).toBe(2 / 3);
      for (const bad of [0, 1, 1.5, "0.5"]) {
        writeFileSync(config, JSON.stringify({ ...written, default_pruned_fraction: bad }));
        expect(() => loadTwig(join(root, "hf", "twig"), base)).toThrow(
          `default_pruned_fraction must be a number between 0 and 1 (both excluded), got ${JSON.stringify(bad)}`,
        );
      }
    } finally {
      writeFileSync(config, JSON.stringify(written));
    }
  });

  it("rejects a twig that does not fit the base model", () => {
    const base = loadLlava(join(root, "hf"));
    expect(() => growTwig(base, 6, 3)).toThrow(/exceeds the base model's 8 layers/);
  });
});

describe("tokenizer and prompt format", () => {
  it("encodes the LLaVA v1 prompt with one image token and decodes words back", () => {
    const codec = TextCodec.load(join(root, "hf"));
    const prompt = codec.formatChat([{ role: "user", content: "what colour is the circle ?" }]);
    expect(prompt).toBe(
      "<s>A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions. USER: <image>\nwhat colour is the circle ? ASSISTANT:",
    );
    const ids = codec.encode(prompt);
    const image = codec.tokenId("<image>") as number;
    expect(ids[0]).toBe(codec.tokenId("<s>"));
    expect(ids.filter((id) => id === image)).toHaveLength(1);
    expect(ids).not.toContain(codec.tokenId("<unk>"));
    expect(codec.decode(codec.encode("the red circle is in the top left"))).toBe("the red circle is in the top left");
    expect(() => codec.formatChat([{ role: "system", content: "x" }])).toThrow(/no user message/);
  });
});
