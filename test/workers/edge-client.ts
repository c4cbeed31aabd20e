/**
 * Helpers for the Workers tests: talk to the edge through its real entry point
 * (exports.default.fetch), or through its app with some variables changed
 * (edgeWith), create tenants and keys through the admin API, build small
 * images (the edge checks magic bytes only, it never decodes), read streams
 * that must not end early, and wait for a condition.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import app from "../../edge/src/index.js";

export const ADMIN_TOKEN = "test-admin-token";
const BASE = "http://edge.test";

export function edge(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

/**
 * The edge's app with some of its variables replaced, on a fresh execution
 * context; the answer is returned once the work it left in waitUntil is done.
 */
export async function edgeWith(vars: Record<string, unknown>, path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`${BASE}${path}`, init), { ...env, ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

/** Waits until `check` returns a value that is not undefined (bounded only by the test's timeout). */
export async function until<T>(check: () => Promise<T | undefined> | T | undefined, pauseMs = 20): Promise<T> {
  while (true) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

/** Reads a stream until the text read so far contains `needle`; fails if the stream ends first. */
export async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, needle: string): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes(needle)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`the stream ended before ${JSON.stringify(needle)}; it said ${JSON.stringify(text)}`);
    text += decoder.decode(value, { stream: true });
  }
  return text;
}

export interface TestTenant {
  id: string;
  keyId: string;
  key: string;
}

/** A fresh tenant with one key, created through the admin API. */
export async function newTenant(settings: Record<string, unknown> = {}): Promise<TestTenant> {
  const res = await edge("/admin/tenants", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "test", ...settings }),
  });
  if (res.status !== 201) throw new Error(`creating a tenant failed: ${res.status} ${await res.text()}`);
  const tenant = (await res.json()) as { id: string };
  const k = await edge(`/admin/tenants/${tenant.id}/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  const key = (await k.json()) as { id: string; key: string };
  return { id: tenant.id, keyId: key.id, key: key.key };
}

export const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** `size` bytes that start like a PNG (deterministic filler after the signature). */
export function pngLike(size: number, salt = 0): Uint8Array {
  const b = new Uint8Array(size);
  b.set(PNG_SIGNATURE);
  for (let i = PNG_SIGNATURE.length; i < size; i++) b[i] = (i * 31 + salt) & 0xff;
  return b;
}

export function dataUrl(bytes: Uint8Array, type = "image/png"): string {
  let s = "";
  for (const x of bytes) s += String.fromCharCode(x);
  return `data:${type};base64,${btoa(s)}`;
}

/** A chat request with one image and a script word for the scripted GPU service. */
export function chatBody(script: string, over: Record<string, unknown> = {}, image = dataUrl(pngLike(64))) {
  return {
    model: "scripted",
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: image } },
          { type: "text", text: script },
        ],
      },
    ],
    ...over,
  };
}

export function chat(key: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return edge("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** Splits an SSE body into its `data:` payloads (skipping `: keep-alive` comments), checking the framing as it goes. */
export function sseData(text: string): string[] {
  if (!text.endsWith("\n\n"))
    throw new Error(`the SSE body does not end with a blank line: ${JSON.stringify(text.slice(-40))}`);
  return text
    .slice(0, -2)
    .split("\n\n")
    .filter((event) => event !== ": keep-alive")
    .map((event) => {
      if (!event.startsWith("data: ") || event.includes("\n"))
        throw new Error(`not a single-line data event: ${JSON.stringify(event)}`);
      return event.slice("data: ".length);
    });
}

/** Forgets what a scripted GPU service saw. */
export async function resetScripted(url: string): Promise<void> {
  const res = await fetch(`${url}/_test/reset`, { method: "POST" });
  if (res.status !== 204) throw new Error(`resetting ${url} answered ${res.status}`);
}

export async function scriptedState(url: string) {
  return (await (await fetch(`${url}/_test/state`)).json()) as {
    calls: number;
    cancelled: number;
    lastDeltas: number;
    lastAuthorization: string | null;
    lastTimeoutMs: number | null;
    lastRequest: Record<string, unknown>;
    lastImageBytes: number;
    lastImageMediaType: string;
    lastImageSha256: string;
  };
}
