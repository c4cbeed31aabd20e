/**
 * The stream's `twigvlm` extension before the final chunk, in front of the
 * scripted GPU service: the first chunk carries the kept visual tokens and the
 * grids they lie on, each content chunk its token count and how many of them
 * were accepted drafts; the non-stream answer carries the kept tokens too.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { chat, chatBody, newTenant, sseData, type TestTenant } from "./edge-client.js";

let t: TestTenant;
beforeAll(async () => {
  t = await newTenant({ requests_per_minute: 1000, tokens_per_minute: 10_000_000, concurrent_streams: 50 });
});

const grid = { first_index: 0, rows: 8, cols: 8, left: 0, top: -0.25, width: 1, height: 1.5 };

describe("the twigvlm extension of a stream", () => {
  it("puts the kept visual tokens and their grids on the first chunk, token counts on each content chunk", async () => {
    const data = sseData(await (await chat(t.key, chatBody("hello", { stream: true }))).text());
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    expect(chunks[0].twigvlm).toEqual({
      mode: "twig",
      visual_tokens: 64,
      kept_visual_indices: [1, 2, 3],
      visual_grids: [grid],
    });
    const content = chunks.filter((c) => c.choices[0]?.delta.content);
    expect(content.map((c) => [c.choices[0].delta.content, c.twigvlm])).toEqual([
      ["Hel", { tokens: 1, accepted_draft_tokens: 0 }],
      ["lo", { tokens: 2, accepted_draft_tokens: 2 }],
      [" world", { tokens: 1, accepted_draft_tokens: 0 }],
    ]);
  });

  it("adds the kept visual tokens and grids to the non-stream answer's statistics", async () => {
    const res = await chat(t.key, chatBody("hello"));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { twigvlm: Record<string, unknown> };
    expect(body.twigvlm).toMatchObject({
      kept_visual_indices: [1, 2, 3],
      visual_grids: [grid],
      visual_tokens_kept: 3,
      accepted_tokens: 2,
    });
  });
});
