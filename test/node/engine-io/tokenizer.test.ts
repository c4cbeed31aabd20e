/**
 * The prompt format: a model's own chat_template (tokenizer_config.json, rendered with
 * @huggingface/jinja) when it ships one, else LLaVA-1.5's "v1" conversation; both
 * tokenize with the image placeholder as one token. The demo model's own template and
 * tokenizer give PyTorch's prompt ids (training/data.py prompt_ids, in the parity fixture);
 * the template cases run on a copy of its tokenizer.json, with templates written beside it.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LLAVA_V1_SYSTEM, TextCodec } from "../../../gpu-service/src/engine/tokenizer.js";
import { readParityFixture } from "../../../gpu-service/tools/eval/parity.js";
import { repoRoot } from "../../support/gpu-service.js";

const DEMO = join(repoRoot, "models", "demo");
const IMAGE_TOKEN: number = JSON.parse(readFileSync(join(DEMO, "config.json"), "utf8")).image_token_index;
const root = mkdtempSync(join(tmpdir(), "twig-tok-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const MODEL_DIR = join(root, "model");
mkdirSync(MODEL_DIR);
copyFileSync(join(DEMO, "tokenizer.json"), join(MODEL_DIR, "tokenizer.json"));

// A LLaVA-style template: the system line, then "USER: ... ASSISTANT: ...</s>" turns.
const TEMPLATE = [
  "{{ bos_token }}{% for m in messages %}",
  "{% if m['role'] == 'system' %}[SYS] {{ m['content'] }} [/SYS]",
  "{% elif m['role'] == 'user' %}USER: {{ m['content'] }} ",
  "{% else %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}",
  "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
].join("");

describe("prompt format", () => {
  it("gives the demo model's prompts the ids PyTorch trained it on", () => {
    const codec = TextCodec.load(DEMO);
    const fixture = readParityFixture(join(DEMO, "parity.json"));
    let checked = 0;
    for (const c of fixture.cases) {
      const text = codec.formatChat([{ role: "user", content: c.question }]);
      expect(text).toBe(`<s>USER: <image>\n${c.question} ASSISTANT:`);
      expect(codec.encode(text), c.question).toEqual(c.inputIds);
      checked++;
    }
    expect(checked).toBe(fixture.cases.length);
    expect(checked).toBeGreaterThan(3);
  });

  it("renders the model's chat_template with the image in the first user message", () => {
    writeFileSync(
      join(MODEL_DIR, "tokenizer_config.json"),
      JSON.stringify({ chat_template: TEMPLATE, bos_token: { content: "<s>" }, eos_token: "</s>" }),
    );
    const codec = TextCodec.load(MODEL_DIR);
    const text = codec.formatChat([
      { role: "system", content: "be brief" },
      { role: "user", content: "what is red" },
      { role: "assistant", content: "a circle" },
      { role: "user", content: "and blue" },
    ]);
    expect(text).toBe(
      "<s>[SYS] be brief [/SYS]USER: <image>\nwhat is red ASSISTANT: a circle</s>USER: and blue ASSISTANT:",
    );
    const ids = codec.encode(text);
    expect(ids.filter((id) => id === IMAGE_TOKEN)).toHaveLength(1);
  });

  it("uses the LLaVA v1 conversation when the model ships no template", () => {
    rmSync(join(MODEL_DIR, "tokenizer_config.json"), { force: true });
    const text = TextCodec.load(MODEL_DIR).formatChat([{ role: "user", content: "what is red" }]);
    expect(text).toBe(`<s>${LLAVA_V1_SYSTEM} USER: <image>\nwhat is red ASSISTANT:`);
  });

  it("rejects a conversation that does not end with the user", () => {
    writeFileSync(join(MODEL_DIR, "tokenizer_config.json"), JSON.stringify({ chat_template: TEMPLATE }));
    const codec = TextCodec.load(MODEL_DIR);
    expect(() => codec.formatChat([{ role: "assistant", content: "hi" }])).toThrow(/no user message/);
    expect(() =>
      codec.formatChat([
        { role: "user", content: "a" },
        { role: "assistant", content: "b" },
      ]),
    ).toThrow(/last message/);
  });
});
