/**
 * Request bodies are capped before anything parses them (the test caps:
 * MAX_REQUEST_BYTES 2 MiB, MAX_IMAGE_BYTES 1 MiB): a declared length over the
 * cap is refused unread, a body that grows past it while it streams in is cut
 * there, and either is a 413 naming the limit. JSON that is not UTF-8, not
 * JSON or nested too deep is a 400. After each refusal the next request is
 * served (model "bodies", this file's own scripted GPU service).
 */
import { describe, expect, it } from "vitest";
import { ADMIN_TOKEN, chatBody, dataUrl, edge, newTenant, pngLike, type TestTenant } from "./edge-client.js";

const CAP = 2 * 1024 * 1024;
const post = (t: TestTenant, body: BodyInit, extra: RequestInit = {}) =>
  edge("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
    body,
    ...extra,
  });
const good = (t: TestTenant) => post(t, JSON.stringify(chatBody("hello", { model: "bodies" })));

/** `bytes` in pieces of 64 KiB, as a body of unknown length. */
function chunked(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + 65536));
      at += 65536;
    },
  });
}

async function expectServedNext(t: TestTenant) {
  const res = await good(t);
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({ choices: [{ message: { content: "Hello world" } }] });
}

describe("the JSON body cap (MAX_REQUEST_BYTES)", () => {
  const oversized = () => new TextEncoder().encode(JSON.stringify(chatBody("x".repeat(CAP), { model: "bodies" })));

  it("refuses a declared length over the cap with 413 naming the limit, then serves the next request", async () => {
    const t = await newTenant();
    const res = await post(t, oversized());
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({
      error: {
        type: "invalid_request_error",
        code: "request_too_large",
        param: null,
        message: `the request body is larger than the limit of ${CAP} bytes (MAX_REQUEST_BYTES)`,
      },
    });
    await expectServedNext(t);
  });

  it("cuts a body of unknown length where it passes the cap", async () => {
    const t = await newTenant();
    // @ts-expect-error workerd needs duplex for a streamed request body in some versions
    const res = await post(t, chunked(oversized()), { duplex: "half" });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: "request_too_large" } });
    await expectServedNext(t);
  });

  it("refuses a data: URL over MAX_IMAGE_BYTES inside a body under the cap", async () => {
    const t = await newTenant();
    const res = await post(
      t,
      JSON.stringify(chatBody("hello", { model: "bodies" }, dataUrl(pngLike(1024 * 1024 + 10)))),
    );
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({
      error: { code: "image_too_large", message: expect.stringContaining("1048576 bytes (MAX_IMAGE_BYTES)") },
    });
    await expectServedNext(t);
  });

  it("caps admin bodies too", async () => {
    const res = await edge("/admin/tenants", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "x", pad: "y".repeat(70_000) }),
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: "request_too_large" } });
  });
});

describe("bodies that are not JSON objects", () => {
  it("answers 400 invalid_json, saying what is wrong, for each", async () => {
    const t = await newTenant();
    const cases: [BodyInit, RegExp][] = [
      ["", /empty/],
      ['{"model": "bodies", "messages": [', /not valid JSON/],
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), /not valid UTF-8/],
      [`${"[".repeat(100_000)}${"]".repeat(100_000)}`, /nests deeper than 64 levels/],
      [`{"messages": ${"[".repeat(65)}${"]".repeat(65)}}`, /nests deeper than 64 levels/],
    ];
    let checked = 0;
    for (const [body, message] of cases) {
      const res = await post(t, body);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        error: { code: "invalid_json", message: expect.stringMatching(message) },
      });
      checked++;
    }
    expect(checked).toBe(cases.length);
    // brackets inside strings do not count as nesting
    const quoted = await post(t, JSON.stringify(chatBody("[".repeat(200), { model: "bodies" })));
    expect(quoted.status).toBe(200);
    await quoted.json();
    await expectServedNext(t);
  });

  it("answers 400 for a type or shape that is wrong, without echoing it back whole", async () => {
    const t = await newTenant();
    const deep = { type: [[[["x".repeat(10_000)]]]] };
    const res = await post(t, JSON.stringify({ model: "bodies", messages: [{ role: "user", content: [deep] }] }));
    expect(res.status).toBe(400);
    const text = await res.text();
    expect(text.length).toBeLessThan(1000);
    expect(JSON.parse(text)).toMatchObject({ error: { param: "messages[0].content[0].type" } });
    const long = await post(t, JSON.stringify(chatBody("hello", { model: "m".repeat(100_000) })));
    expect(long.status).toBe(400);
    expect((await long.text()).length).toBeLessThan(1000);
  });
});

describe("multipart uploads", () => {
  it("answers 400 for a multipart body that does not parse or holds no file part", async () => {
    const t = await newTenant();
    const broken = await edge("/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}`, "content-type": "multipart/form-data; boundary=xyz" },
      body: '--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n\x89PNG',
    });
    expect(broken.status).toBe(400);
    expect(await broken.json()).toMatchObject({ error: { code: "invalid_multipart" } });
    const form = new FormData();
    form.append("purpose", "vision");
    const empty = await edge("/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}` },
      body: form,
    });
    expect(empty.status).toBe(400);
    expect(await empty.json()).toMatchObject({ error: { code: "missing_file" } });
  });
});
