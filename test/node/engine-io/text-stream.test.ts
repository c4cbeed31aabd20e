/** Streaming text: multi-byte characters are never split, stop sequences never leak, even across tokens. */
import { describe, expect, it } from "vitest";
import { TextStream } from "../../../gpu-service/src/engine/text-stream.js";

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
