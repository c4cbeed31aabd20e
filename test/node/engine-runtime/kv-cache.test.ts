/** KvCache: append in place with growth, rollback without copying, selection, dense views. */
import { describe, expect, it } from "vitest";
import { KvCache } from "../../../gpu-service/src/engine/runtime/kv-cache.js";

/** Rows [count, kvHeads * hd] whose values encode (token, head, i) so that placement is checkable. */
const rows = (first: number, count: number, heads: number, hd: number, sign = 1) =>
  Float32Array.from({ length: count * heads * hd }, (_, j) => {
    const t = first + Math.floor(j / (heads * hd));
    const h = Math.floor(j / hd) % heads;
    return sign * (t * 100 + h * 10 + (j % hd));
  });
/** The expected dense layout [heads, tokens, hd] for the given token ids. */
const dense = (tokens: number[], heads: number, hd: number, sign = 1) =>
  Array.from({ length: heads }, (_, h) =>
    tokens.flatMap((t) => Array.from({ length: hd }, (_, i) => sign * (t * 100 + h * 10 + i))),
  ).flat();

describe("KvCache", () => {
  const [heads, hd] = [2, 3];
  it("appends in place, grows by steps of 64, and keeps the head-major layout", () => {
    const c = new KvCache(heads, hd);
    c.append(rows(0, 5, heads, hd), rows(0, 5, heads, hd, -1), 5);
    expect(c.length).toBe(5);
    expect(c.capacity).toBe(64);
    const buffer = c.keyBuffer;
    c.append(rows(5, 2, heads, hd), rows(5, 2, heads, hd, -1), 2);
    expect(c.keyBuffer).toBe(buffer); // no reallocation while there is room
    expect(Array.from(c.key)).toEqual(dense([0, 1, 2, 3, 4, 5, 6], heads, hd));
    expect(Array.from(c.value)).toEqual(dense([0, 1, 2, 3, 4, 5, 6], heads, hd, -1));
    c.append(rows(7, 60, heads, hd), rows(7, 60, heads, hd, -1), 60);
    expect(c.capacity).toBe(128);
    expect(Array.from(c.key)).toEqual(
      dense(
        Array.from({ length: 67 }, (_, i) => i),
        heads,
        hd,
      ),
    );
  });

  it("rolls back by length alone and overwrites on the next append", () => {
    const c = new KvCache(heads, hd);
    c.append(rows(0, 6, heads, hd), rows(0, 6, heads, hd), 6);
    const buffer = c.keyBuffer;
    c.truncate(3);
    expect(c.length).toBe(3);
    expect(c.keyBuffer).toBe(buffer);
    c.append(rows(10, 1, heads, hd), rows(10, 1, heads, hd), 1);
    expect(Array.from(c.key)).toEqual(dense([0, 1, 2, 10], heads, hd));
  });

  it("selects positions in the given order, and clones independently", () => {
    const c = new KvCache(heads, hd);
    c.append(rows(0, 6, heads, hd), rows(0, 6, heads, hd), 6);
    const copy = c.clone();
    c.select([4, 1, 2]);
    expect(Array.from(c.key)).toEqual(dense([4, 1, 2], heads, hd));
    expect(Array.from(copy.key)).toEqual(dense([0, 1, 2, 3, 4, 5], heads, hd));
    expect(() => c.select([3])).toThrow(/outside/);
    c.append(rows(9, 1, heads, hd), rows(9, 1, heads, hd), 1);
    expect(Array.from(c.key)).toEqual(dense([4, 1, 2, 9], heads, hd));
  });
});
