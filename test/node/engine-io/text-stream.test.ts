/** Streaming text: multi-byte characters are never split, stop sequences never leak, even across tokens. */
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { describe, expect, it } from "vitest";
import { TextStream } from "../../../gpu-service/src/engine/text-stream.js";
import { TextCodec } from "../../../gpu-service/src/engine/tokenizer.js";
import { wordTokenizer } from "../../../gpu-service/tools/make-tiny/tiny-model.js";
import { repoRoot } from "../../support/gpu-service.js";

// a byte-level "tokenizer": each id is one byte of UTF-8
const bytes = (s: string) => Array.from(new TextEncoder().encode(s));
const decode = (ids: number[]) => new TextDecoder().decode(Uint8Array.from(ids));

function streamAll(text: string, stops: string[], chunk = 1): { deltas: string[]; stopped: boolean } {
  const ids = bytes(text);
  const s = new TextStream(decode, stops);
  const deltas: string[] = [];
  for (let i = 0; i < ids.length && !s.stopped; i += chunk) deltas.push(s.push(ids.slice(i, i + chunk)));
  deltas.push(s.flush());
  return { deltas: deltas.filter((d) => d !== ""), stopped: s.stopped };
}

describe("TextStream", () => {
  it("never emits half of a multi-byte character", () => {
    const { deltas } = streamAll("héllo wörld 🌍!", []);
    expect(deltas.join("")).toBe("héllo wörld 🌍!");
    for (const d of deltas) expect(d).not.toContain("\uFFFD");
  });

  it("stops before a stop sequence that straddles tokens, and never emits any of it", () => {
    for (const chunk of [1, 2, 3, 5]) {
      const { deltas, stopped } = streamAll("the red circle. END of story", ["END"], chunk);
      expect(stopped).toBe(true);
      expect(deltas.join("")).toBe("the red circle. ");
      for (const d of deltas) expect(d).not.toMatch(/E|EN|END/);
    }
  });

  it("releases a held-back prefix when the stop sequence does not complete", () => {
    const { deltas, stopped } = streamAll("an ENVELOPE", ["END"]);
    expect(stopped).toBe(false);
    expect(deltas.join("")).toBe("an ENVELOPE");
  });

  it("takes the earliest of several stop sequences", () => {
    const { deltas } = streamAll("one two three", ["three", "two"], 4);
    expect(deltas.join("")).toBe("one ");
  });
});

// ---- the text grows as decoding the whole output at every token would make it ----------------

/**
 * The text stream as it was before it grew incrementally: the whole output decoded at every push. `rewrites`:
 * a token changed text already decoded (a clean-up rule: "i '" then "s" is "i's"), which no stream can take back.
 */
function wholeDecodeDeltas(
  decode: (ids: number[]) => string,
  ids: number[],
  stops: string[],
  chunks: number[],
): { deltas: string[]; rewrites: boolean } {
  const deltas: string[] = [];
  const seen: number[] = [];
  let emitted = 0;
  let stopped = false;
  let before = "";
  let rewrites = false;
  const emit = (last: boolean) => {
    const text = decode(seen);
    if (!text.startsWith(before.replace(/\uFFFD+$/, ""))) rewrites = true;
    before = text;
    let end = text.length;
    for (const stop of stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && at < end) {
        end = at;
        stopped = true;
      }
    }
    if (!stopped && !last) {
      if (text.endsWith("\uFFFD")) end = Math.min(end, text.length - 1);
      for (const stop of stops)
        for (let k = Math.min(stop.length - 1, text.length); k > 0; k--)
          if (text.endsWith(stop.slice(0, k))) {
            end = Math.min(end, text.length - k);
            break;
          }
    }
    deltas.push(end > emitted ? text.slice(emitted, end) : "");
    emitted = Math.max(emitted, end);
  };
  let i = 0;
  for (const n of chunks) {
    if (stopped) break;
    seen.push(...ids.slice(i, i + n));
    i += n;
    emit(false);
  }
  if (!stopped) emit(true);
  return { deltas, rewrites };
}

function streamedDeltas(decode: (ids: number[]) => string, ids: number[], stops: string[], chunks: number[]): string[] {
  const s = new TextStream(decode, stops);
  const deltas: string[] = [];
  let i = 0;
  for (const n of chunks) {
    if (s.stopped) break;
    deltas.push(s.push(ids.slice(i, i + n)));
    i += n;
  }
  if (!s.stopped) deltas.push(s.flush());
  return deltas;
}

/** A small deterministic generator (tests must repeat). */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

const special = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

/** Whole words and "##" pieces (make-tiny's WordPiece tokenizer), with words the clean-up rewrites across tokens (" ' ", " n't"). */
const cleanupWordPiece = wordTokenizer(
  ["i", "do", "not", "'", "s", "n't", "m", "'m", "'s", "ve", "'ve", "re", "'re", ".", ",", "?", "!", "go"].concat([
    "##ing",
    "##s",
    "a",
    "red",
    "circle",
    "the",
    "is",
    "there",
  ]),
);

/** The engine's decoding (tokenizer.ts's TextCodec) of a tokenizer.json: special tokens skipped, nothing for no ids. */
function decoderOf(json: object): (ids: number[]) => string {
  const t = new Tokenizer(json, {});
  return (ids) => (ids.length ? t.decode(ids, { skip_special_tokens: true }) : "");
}

/** Llama-style: "▁" word starts, byte-fallback tokens <0x00>..<0xFF> for what the vocabulary lacks. */
function byteFallbackBpe(): object {
  const words = ["<unk>", "<s>", "</s>"];
  for (let b = 0; b < 256; b++) words.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  words.push("▁", "▁the", "▁red", "▁circle", "▁is", "a", "b", ".", "▁.", "é", "▁wör", "ld");
  const vocab = Object.fromEntries(words.map((w, i) => [w, i]));
  return {
    version: "1.0",
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", unk_token: "<unk>", fuse_unk: true, byte_fallback: true, vocab, merges: [] },
  };
}

describe("TextStream decodes a window, and its text is the whole output's", () => {
  const tokenizers: Array<[string, () => (ids: number[]) => string, (r: () => number) => number]> = [
    [
      "the demo model's tokenizer",
      () => {
        const codec = TextCodec.load(join(repoRoot, "models", "demo"));
        return (ids) => codec.decode(ids);
      },
      (r) => Math.floor(r() * 82),
    ],
    [
      "a WordPiece tokenizer whose clean-up spans tokens",
      () => decoderOf(cleanupWordPiece.json),
      (r) => Math.floor(r() * cleanupWordPiece.vocabSize),
    ],
    [
      "a byte-fallback tokenizer (multi-byte characters split over tokens)",
      () => decoderOf(byteFallbackBpe()),
      // half the tokens bytes of "é", "€" or "🌍" in order (with a stray one now and then), half words and specials
      (r) => {
        const utf8 = [0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x8c, 0x8d];
        return r() < 0.5
          ? 3 + utf8[Math.floor(r() * utf8.length)]
          : r() < 0.1
            ? Math.floor(r() * 3)
            : 259 + Math.floor(r() * 12);
      },
    ],
  ];
  for (const [name, make, pick] of tokenizers) {
    it(`${name}: every delta equals decoding the whole output at every token`, () => {
      const decode = make();
      const r = lcg(name.length);
      let compared = 0;
      let windows = 0;
      for (let trial = 0; trial < 300; trial++) {
        const n = 1 + Math.floor(r() * 60);
        const ids = Array.from({ length: n }, () => pick(r));
        const chunks: number[] = [];
        for (let left = n; left > 0; ) {
          const c = Math.min(left, 1 + Math.floor(r() * 3));
          chunks.push(c);
          left -= c;
        }
        // a stop string from the output's own text now and then
        const full = decode(ids);
        const stops = trial % 3 === 0 && full.length > 4 ? [full.slice(full.length >> 1, (full.length >> 1) + 2)] : [];
        const { deltas: want, rewrites } = wholeDecodeDeltas(decode, ids, stops, chunks);
        if (rewrites) continue;
        const got = streamedDeltas(decode, ids, stops, chunks);
        expect(
          got,
          `ids ${JSON.stringify(ids)} in chunks ${JSON.stringify(chunks)}, stops ${JSON.stringify(stops)}`,
        ).toEqual(want);
        compared++;
        if (n > 8) windows++;
      }
      console.log(`${name}: ${compared} of 300 outputs compared (the others' tokens rewrite text already decoded)`);
      expect(compared).toBeGreaterThan(150);
      expect(windows).toBeGreaterThan(100);
    });
  }
});
