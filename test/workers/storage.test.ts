/**
 * Uploads under the tenant's storage quota (bytes and files, per tenant or the
 * edge's default), DELETE /v1/files/{id}, expiry (FILE_TTL_SECONDS: looked up
 * lazily, and swept by the limiter's alarm), and no temporary object left when
 * a copy fails. The tenant's TenantLimiter keeps the index of its files.
 */
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { getTenant } from "../../edge/src/auth/store.js";
import { putStream } from "../../edge/src/files/store.js";
import { uploadUnderQuota } from "../../edge/src/files/tenant-files.js";
import type { TenantLimiter } from "../../edge/src/limits/limiter.js";
import { chat, chatBody, edge, edgeWith, newTenant, pngLike, type TestTenant } from "./edge-client.js";

const upload = (t: TestTenant, body: Uint8Array) =>
  edge("/v1/files", {
    method: "POST",
    headers: { authorization: `Bearer ${t.key}`, "content-type": "image/png" },
    body,
  });
const call = (t: TestTenant, path: string, method = "GET") =>
  edge(path, { method, headers: { authorization: `Bearer ${t.key}` } });
const limiterOf = (tenantId: string) => env.LIMITER.get(env.LIMITER.idFromName(tenantId));
const storageOf = (tenantId: string) =>
  runInDurableObject(limiterOf(tenantId), (o: TenantLimiter) => o.usage().storage);
const idOf = async (res: Response) => ((await res.json()) as { id: string }).id;

/** A bucket whose copies to a tenant's space fail (temporary objects are written as usual). */
function failingCopies(bucket: R2Bucket): R2Bucket {
  return new Proxy(bucket, {
    get(target, prop) {
      if (prop === "put")
        return (key: string, value: unknown, opts?: R2PutOptions) =>
          key.startsWith("tenants/")
            ? Promise.reject(new Error("R2 refused the copy"))
            : target.put(key, value as ReadableStream, opts);
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

describe("the storage quota", () => {
  it("refuses a file past the tenant's file count with 429, and takes it again after a delete", async () => {
    const t = await newTenant({ storage_files: 2 });
    const a = await idOf(await upload(t, pngLike(1000, 1)));
    expect((await upload(t, pngLike(1000, 2))).status).toBe(201);
    const refused = await upload(t, pngLike(1000, 3));
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({
      error: {
        type: "rate_limit_error",
        code: "storage_quota_exceeded",
        message: expect.stringMatching(/storage quota exceeded: the tenant stores 2 of 2 files .*DELETE \/v1\/files/),
      },
    });
    // the same bytes again, as multipart (what the openai SDK sends): known before storing, they need no room
    const form = new FormData();
    form.append("file", new File([pngLike(1000, 1)], "again.png"));
    const again = await edge("/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}` },
      body: form,
    });
    expect(again.status).toBe(201);
    expect(await idOf(again)).toBe(a);
    expect((await call(t, `/v1/files/${a}`, "DELETE")).status).toBe(200);
    expect(await storageOf(t.id)).toEqual({ bytes: 1000, files: 1 });
    expect((await upload(t, pngLike(1000, 3))).status).toBe(201);
  });

  it("refuses bytes past the tenant's byte quota with 429, and a file larger than the whole quota with 413", async () => {
    const t = await newTenant({ storage_bytes: 5000 });
    expect((await upload(t, pngLike(3000, 1))).status).toBe(201);
    const full = await upload(t, pngLike(3000, 2));
    expect(full.status).toBe(429);
    expect(((await full.json()) as { error: { message: string } }).error.message).toContain("3000 of 5000 bytes");
    const huge = await upload(t, pngLike(6000, 3));
    expect(huge.status).toBe(413);
    expect(await huge.json()).toMatchObject({
      error: {
        code: "storage_quota_exceeded",
        message: expect.stringContaining("larger than the tenant's whole storage quota of 5000 bytes"),
      },
    });
    // refused uploads hold nothing
    expect(await storageOf(t.id)).toEqual({ bytes: 3000, files: 1 });
  });

  it("counts a streamed upload by its declared length before reading it", async () => {
    const t = await newTenant({ storage_bytes: 4000 });
    const body = pngLike(5000, 4);
    const res = await edge("/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}`, "content-type": "image/png", "content-length": "5000" },
      body: new ReadableStream({
        start(c) {
          c.enqueue(body);
          c.close();
        },
      }),
      // @ts-expect-error workerd needs duplex for a streamed request body in some versions
      duplex: "half",
    });
    expect(res.status).toBe(413);
    expect((await env.FILES.list({ prefix: `tenants/${t.id}/` })).objects).toHaveLength(0);
  });
});

describe("DELETE /v1/files/{id}", () => {
  it("deletes the file in OpenAI's shape; then reading or using it is a 404, and its bytes are gone", async () => {
    const t = await newTenant();
    const png = pngLike(2048, 5);
    const id = await idOf(await upload(t, png));
    const sha = id.slice("file-".length);
    expect(await storageOf(t.id)).toEqual({ bytes: 2048, files: 1 });
    const del = await call(t, `/v1/files/${id}`, "DELETE");
    expect(del.status).toBe(200);
    expect(await del.json()).toEqual({ id, object: "file", deleted: true });
    expect((await call(t, `/v1/files/${id}`)).status).toBe(404);
    expect((await call(t, `/v1/files/${id}/content`)).status).toBe(404);
    const use = await chat(t.key, chatBody("hello", {}, id));
    expect(use.status).toBe(404);
    expect(await use.json()).toMatchObject({ error: { code: "file_not_found" } });
    expect(await env.FILES.head(`tenants/${t.id}/${sha}`)).toBeNull();
    expect(await storageOf(t.id)).toEqual({ bytes: 0, files: 0 });
    expect((await call(t, `/v1/files/${id}`, "DELETE")).status).toBe(404);
  });

  it("cannot delete another tenant's file", async () => {
    const owner = await newTenant();
    const other = await newTenant();
    const id = await idOf(await upload(owner, pngLike(1500, 6)));
    expect((await call(other, `/v1/files/${id}`, "DELETE")).status).toBe(404);
    expect((await call(owner, `/v1/files/${id}`)).status).toBe(200);
  });
});

describe("expiry", () => {
  /** Moves a file's expiry into the past, as if FILE_TTL_SECONDS had gone by. */
  const age = (tenantId: string, sha: string) =>
    runInDurableObject(limiterOf(tenantId), (_o: TenantLimiter, state: DurableObjectState) => {
      state.storage.sql.exec("UPDATE files SET expires_at = ? WHERE sha256 = ?", Date.now() - 1, sha);
    });

  it("gives an upload FILE_TTL_SECONDS and sets the limiter's alarm for it", async () => {
    const t = await newTenant();
    const res = await upload(t, pngLike(1200, 7));
    const file = (await res.json()) as { created_at: number; expires_at: number };
    expect(file.expires_at - file.created_at).toBeGreaterThanOrEqual(7 * 24 * 3600 - 1);
    expect(file.expires_at - file.created_at).toBeLessThanOrEqual(7 * 24 * 3600);
    const alarm = await runInDurableObject(limiterOf(t.id), (_o: TenantLimiter, s: DurableObjectState) =>
      s.storage.getAlarm(),
    );
    expect(Math.floor((alarm ?? 0) / 1000)).toBe(file.expires_at);
  });

  it("refuses an expired upload at once and removes it, bytes and quota", async () => {
    const t = await newTenant();
    const id = await idOf(await upload(t, pngLike(1300, 8)));
    const sha = id.slice("file-".length);
    await age(t.id, sha);
    expect((await call(t, `/v1/files/${id}`)).status).toBe(404);
    expect((await chat(t.key, chatBody("hello", {}, id))).status).toBe(404);
    expect(await env.FILES.head(`tenants/${t.id}/${sha}`)).toBeNull();
    expect(await storageOf(t.id)).toEqual({ bytes: 0, files: 0 });
  });

  it("sweeps expired uploads when the limiter's alarm runs", async () => {
    const t = await newTenant();
    const old = await idOf(await upload(t, pngLike(1400, 9)));
    const kept = await idOf(await upload(t, pngLike(1400, 10)));
    await age(t.id, old.slice("file-".length));
    expect(await runDurableObjectAlarm(limiterOf(t.id))).toBe(true);
    expect(await env.FILES.head(`tenants/${t.id}/${old.slice("file-".length)}`)).toBeNull();
    expect(await env.FILES.head(`tenants/${t.id}/${kept.slice("file-".length)}`)).not.toBeNull();
    expect(await storageOf(t.id)).toEqual({ bytes: 1400, files: 1 });
  });
});

describe("a failed copy", () => {
  it("leaves no temporary object and gives the quota back (the store, called directly)", async () => {
    const t = await newTenant();
    const tenant = await getTenant(env.DB, t.id);
    if (!tenant) throw new Error("the tenant was not stored");
    const bucket = failingCopies(env.FILES);
    const png = pngLike(3000, 11);
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(png);
        c.close();
      },
    });
    await expect(
      uploadUnderQuota({ ...env, FILES: bucket }, tenant, { bytes: png.length, filename: "" }, () =>
        putStream(bucket, t.id, stream, png.length, 1 << 20),
      ),
    ).rejects.toThrow("R2 refused the copy");
    expect((await env.FILES.list({ prefix: "tmp/" })).objects).toHaveLength(0);
    expect(await storageOf(t.id)).toEqual({ bytes: 0, files: 0 });
  });

  it("answers 500 with the request id and nothing of R2's error, through the route", async () => {
    const t = await newTenant();
    const res = await edgeWith({ FILES: failingCopies(env.FILES) }, "/v1/files", {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}`, "content-type": "image/png" },
      body: pngLike(2500, 12),
    });
    expect(res.status).toBe(500);
    const { error } = (await res.json()) as { error: { message: string; code: string } };
    expect(error.code).toBe("internal_error");
    expect(error.message).toContain(`request id ${res.headers.get("x-request-id")}`);
    expect(error.message).not.toContain("R2");
    expect((await env.FILES.list({ prefix: "tmp/" })).objects).toHaveLength(0);
    expect(await storageOf(t.id)).toEqual({ bytes: 0, files: 0 });
  });
});
