/**
 * API keys and the admin API, through the edge's real entry point inside workerd with D1.
 */
import { describe, expect, it } from "vitest";
import { ADMIN_TOKEN, chat, chatBody, edge, newTenant } from "./edge-client.js";

const models = (key?: string, raw?: string) =>
  edge("/v1/models", {
    headers: raw !== undefined ? { authorization: raw } : key ? { authorization: `Bearer ${key}` } : {},
  });

async function expectOpenAIError(res: Response, status: number, code: string) {
  expect(res.status).toBe(status);
  const body = (await res.json()) as { error: { message: string; type: string; code: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(10);
  expect(typeof body.error.type).toBe("string");
  expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
}

describe("API keys", () => {
  it("refuses a request without a key", async () => {
    await expectOpenAIError(await models(), 401, "missing_api_key");
  });

  it("refuses malformed keys before any lookup", async () => {
    const malformed = [
      "Bearer",
      "Basic abc",
      "Bearer sk-twig-short",
      "Bearer sk-other-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "sk-twig-x",
    ];
    let refused = 0;
    for (const h of malformed) {
      await expectOpenAIError(await models(undefined, h), 401, "invalid_api_key");
      refused++;
    }
    expect(refused).toBe(malformed.length);
  });

  it("refuses a well-formed key that was never issued", async () => {
    await expectOpenAIError(await models(`sk-twig-${"A".repeat(43)}`), 401, "invalid_api_key");
  });

  it("accepts an issued key, and refuses it from the request right after its revocation", async () => {
    const t = await newTenant();
    expect(t.key).toMatch(/^sk-twig-[A-Za-z0-9_-]{43}$/);
    const ok = await models(t.key);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toContain("scripted");

    const revoke = await edge(`/admin/keys/${t.keyId}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(revoke.status).toBe(200);
    await expectOpenAIError(await models(t.key), 401, "invalid_api_key");
    // Revoking twice says there is no such active key.
    const again = await edge(`/admin/keys/${t.keyId}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(again.status).toBe(404);
  });

  it("issues a different key each time, and only the hash is stored", async () => {
    const a = await newTenant();
    const b = await newTenant();
    expect(a.key).not.toBe(b.key);
    const { env } = await import("cloudflare:workers");
    const rows = await env.DB.prepare("SELECT * FROM api_keys WHERE id = ?1").bind(a.keyId).all();
    const stored = JSON.stringify(rows.results);
    expect(stored).not.toContain(a.key);
    expect(stored).not.toContain(a.key.slice(12));
    expect(rows.results[0]).toMatchObject({ tenant_id: a.id, hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
  });

  it("keeps a tenant to its allowed models", async () => {
    const t = await newTenant({ models: ["unreachable"] });
    const list = (await (await models(t.key)).json()) as { data: { id: string }[] };
    expect(list.data.map((m) => m.id)).toEqual(["unreachable"]);
    await expectOpenAIError(await chat(t.key, chatBody("hello")), 403, "model_not_allowed");
  });
});

describe("admin API", () => {
  const create = (auth?: string) =>
    edge("/admin/tenants", {
      method: "POST",
      headers: auth
        ? { authorization: auth, "content-type": "application/json" }
        : { "content-type": "application/json" },
      body: JSON.stringify({ name: "x" }),
    });

  it("refuses a missing or wrong admin token", async () => {
    await expectOpenAIError(await create(), 401, "invalid_admin_token");
    await expectOpenAIError(await create("Bearer test-admin-tokex"), 401, "invalid_admin_token");
    await expectOpenAIError(await create(`Bearer ${ADMIN_TOKEN}x`), 401, "invalid_admin_token");
    await expectOpenAIError(await create(`Basic ${ADMIN_TOKEN}`), 401, "invalid_admin_token");
  });

  it("does not take an API key as an admin token", async () => {
    const t = await newTenant();
    await expectOpenAIError(await create(`Bearer ${t.key}`), 401, "invalid_admin_token");
  });

  it("creates tenants with limits and checks them", async () => {
    const res = await edge("/admin/tenants", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ name: "acme", requests_per_minute: 7, tokens_per_minute: 900, concurrent_streams: 2 }),
    });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({
      name: "acme",
      limits: { requestsPerMinute: 7, tokensPerMinute: 900, concurrentStreams: 2 },
    });
    const bad = await edge("/admin/tenants", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ requests_per_minute: -1 }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("requests_per_minute");
  });

  it("answers 404 for keys of an unknown tenant", async () => {
    const res = await edge("/admin/tenants/tenant_nope/keys", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(res.status).toBe(404);
  });
});
