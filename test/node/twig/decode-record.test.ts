/**
 * The observer a decoding loop tells its statistics to (twig/decode-record.ts), on a clock the test
 * sets: the prefill ends at the first pass of the full path, the steps are the drafting modes' only.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { DecodeRecord } from "../../../gpu-service/src/engine/twig/decode-record.js";

describe("DecodeRecord", () => {
  let clock = 0;
  afterEach(() => {
    vi.restoreAllMocks();
  });
  const at = (ms: number) => {
    clock = ms;
  };

  it("ends the prefill at the first pass and records every verification in a drafting mode", () => {
    vi.spyOn(performance, "now").mockImplementation(() => clock);
    const r = new DecodeRecord(100, true);
    at(130);
    r.passed();
    r.verified([4, 5, 6], 2);
    at(150);
    r.passed();
    r.verified([], 0);
    at(175);
    expect(r.stats()).toEqual({
      prefillMs: 30,
      decodeMs: 45,
      steps: [
        { drafted: [4, 5, 6], accepted: 2 },
        { drafted: [], accepted: 0 },
      ],
    });
  });

  it("records no steps in a plain mode, and counts a run that never reached the full path as prefill", () => {
    vi.spyOn(performance, "now").mockImplementation(() => clock);
    const plain = new DecodeRecord(0, false);
    at(10);
    plain.passed();
    plain.verified([], 0);
    at(12);
    expect(plain.stats()).toEqual({ prefillMs: 10, decodeMs: 2, steps: [] });
    const empty = new DecodeRecord(20, true);
    at(26);
    expect(empty.stats()).toEqual({ prefillMs: 6, decodeMs: 0, steps: [] });
  });
});
