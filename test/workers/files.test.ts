/**
 * Image uploads into R2 (the test cap, MAX_IMAGE_BYTES, is 1 MiB): types by
 * magic bytes, the size cap, content addressing, streaming, and tenant
 * isolation; chats about uploads go to this file's own scripted GPU service
 * (model "files").
 */
import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import {
  chatBody as anyChatBody,
  chat,
  edge,
  newTenant,
  pngLike,
  scriptedState,
  type TestTenant,
} from "./edge-client.js";

const chatBody = (script: string, over: Record<string, unknown>, image: string) =>
  anyChatBody(script, { model: "files", ...over }, image);

const CAP = 1024 * 1024;
const upload = (t: TestTenant, body: BodyInit, type = "image/png", extra: Record<string, string> = {}) =>
  edge("/v1/files", {
    method: "POST",
    headers: { authorization: `Bearer ${t.key}`, "content-type": type, ...extra },
    body,
  });

const sha256 = async (b: Uint8Array) =>
  [...new Uint8Array(await crypto.subtle.digest("SHA-256", b))].map((x) => x.toString(16).padStart(2, "0")).join("");

const JPEG = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1]);
const WEBP = new Uint8Array([
  0x52, 0x49, 0x46, 0x46, 24, 0, 0, 0, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38, 0x20, 0, 0,
]);
const GIF87 = new TextEncoder().encode("GIF87a\x01\x00\x01\x00\x00\x00\x00;");
const GIF89 = new TextEncoder().encode("GIF89a\x01\x00\x01\x00\x00\x00\x00;");

/** A body of unknown length (sent chunked), in pieces of `chunk` bytes. */
function chunked(bytes: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
}

describe("POST /v1/files", () => {
  it("stores a raw PNG under its SHA-256 in the tenant's space and returns its id", async () => {
    const t = await newTenant();
    const png = pngLike(5000, 1);
    const res = await upload(t, png);
    expect(res.status).toBe(201);
    const file = (await res.json()) as { id: string; bytes: number; content_type: string; sha256: string };
    const hash = await sha256(png);
    expect(file).toMatchObject({ id: `file-${hash}`, bytes: 5000, content_type: "image/png", sha256: hash });
    const obj = await env.FILES.get(`tenants/${t.id}/${hash}`);
    expect(new Uint8Array(await (obj as R2ObjectBody).arrayBuffer())).toEqual(png);
    // The same bytes again: the same id, still one object, no temporary left behind.
    const again = (await (await upload(t, png)).json()) as { id: string };
    expect(again.id).toBe(file.id);
    expect((await env.FILES.list({ prefix: "tmp/" })).objects).toHaveLength(0);
  });

  it("accepts JPEG, WebP and GIF by their magic bytes, whatever the declared type, and multipart", async () => {
    const t = await newTenant();
    const jpeg = await upload(t, JPEG, "application/octet-stream");
    expect(jpeg.status).toBe(201);
    expect(((await jpeg.json()) as { content_type: string }).content_type).toBe("image/jpeg");
    let gifs = 0;
    for (const gif of [GIF87, GIF89]) {
      const res = await upload(t, gif, "image/png");
      expect(res.status).toBe(201);
      expect(await res.json()).toMatchObject({ content_type: "image/gif", bytes: gif.length });
      gifs++;
    }
    expect(gifs).toBe(2);
    const form = new FormData();
    form.append("purpose", "vision");
    form.append("file", new File([WEBP], "pic.webp", { type: "image/webp" }));
    const webp = await edge("/v1/files", { method: "POST", headers: { authorization: `Bearer ${t.key}` }, body: form });
    expect(webp.status).toBe(201);
    expect(await webp.json()).toMatchObject({ content_type: "image/webp", filename: "pic.webp", bytes: WEBP.length });
  });

  it("refuses other types with 415, even when they claim to be PNG", async () => {
    const t = await newTenant();
    const others = [
      new TextEncoder().encode("GIF90a this is no GIF"),
      new TextEncoder().encode("hello, this is not an image at all"),
      new Uint8Array([0x89, 0x50]),
    ];
    let refused = 0;
    for (const body of others) {
      const res = await upload(t, body, "image/png");
      expect(res.status).toBe(415);
      expect(await res.json()).toMatchObject({
        error: { code: "unsupported_image_type", message: expect.stringMatching(/PNG, JPEG, WebP or GIF/) },
      });
      refused++;
    }
    expect(refused).toBe(others.length);
    // A multipart part is checked the same way.
    const form = new FormData();
    form.append("file", new File([others[1]], "x.gif"));
    const res = await edge("/v1/files", { method: "POST", headers: { authorization: `Bearer ${t.key}` }, body: form });
    expect(res.status).toBe(415);
  });

  it("refuses images over the cap with 413: declared length, chunked body and multipart", async () => {
    const t = await newTenant();
    const big = pngLike(CAP + 1);
    const declared = await upload(t, big);
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({
      error: { code: "image_too_large", message: expect.stringContaining(String(CAP)) },
    });
    const streamed = await upload(t, chunked(big));
    expect(streamed.status).toBe(413);
    const form = new FormData();
    form.append("file", new File([big], "big.png"));
    const multi = await edge("/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}` },
      body: form,
    });
    expect(multi.status).toBe(413);
    // Exactly at the cap is fine.
    expect((await upload(t, pngLike(CAP))).status).toBe(201);
  });

  it("streams a large body of declared length into R2 intact", async () => {
    const t = await newTenant();
    const png = pngLike(900 * 1024, 7);
    const res = await edge("/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}`, "content-type": "image/png", "content-length": String(png.length) },
      body: chunked(png, 16 * 1024),
      // @ts-expect-error workerd needs duplex for a streamed request body in some versions
      duplex: "half",
    });
    expect(res.status).toBe(201);
    const { sha256: hash } = (await res.json()) as { sha256: string };
    expect(hash).toBe(await sha256(png));
    const head = await env.FILES.head(`tenants/${t.id}/${hash}`);
    expect(head?.size).toBe(png.length);
  });

  it("refuses an empty body", async () => {
    const t = await newTenant();
    expect((await upload(t, new Uint8Array())).status).toBe(400);
  });
});

describe("tenant isolation", () => {
  it("a tenant cannot read or use another tenant's upload", async () => {
    const a = await newTenant();
    const b = await newTenant();
    const png = pngLike(2048, 3);
    const { id } = (await (await upload(a, png)).json()) as { id: string };
    const get = (t: TestTenant, path: string) => edge(path, { headers: { authorization: `Bearer ${t.key}` } });

    expect((await get(a, `/v1/files/${id}`)).status).toBe(200);
    const own = await get(a, `/v1/files/${id}/content`);
    expect(new Uint8Array(await own.arrayBuffer())).toEqual(png);
    const meta = await get(b, `/v1/files/${id}`);
    expect(meta.status).toBe(404);
    expect(await meta.json()).toMatchObject({ error: { code: "file_not_found" } });
    expect((await get(b, `/v1/files/${id}/content`)).status).toBe(404);
    const useIt = await chat(b.key, chatBody("hello", {}, id));
    expect(useIt.status).toBe(404);

    // The owner can chat about it: the GPU service receives exactly the uploaded bytes.
    const ok = await chat(a.key, chatBody("echo", {}, id));
    expect(ok.status).toBe(200);
    await ok.json();
    const seen = await scriptedState(inject("scripted").files);
    expect(seen.lastImageSha256).toBe(id.slice("file-".length));
  });

  it("answers 404 for malformed ids", async () => {
    const a = await newTenant();
    const res = await edge("/v1/files/file-xyz", { headers: { authorization: `Bearer ${a.key}` } });
    expect(res.status).toBe(404);
  });
});
