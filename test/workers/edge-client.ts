/**
 * Helpers for the Workers tests: talk to the edge through its real entry point
 * (exports.default.fetch), create tenants and keys through the admin API, and
 * build small images (the edge checks magic bytes only, it never decodes).
 */
import { exports } from "cloudflare:workers";

export const ADMIN_TOKEN = "test-admin-token";
const BASE = "http://edge.test";

export function edge(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
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

/** Splits an SSE body into its `data:` payloads, checking the framing as it goes. */
export function sseData(text: string): string[] {
  if (!text.endsWith("\n\n"))
    throw new Error(`the SSE body does not end with a blank line: ${JSON.stringify(text.slice(-40))}`);
  return text
    .slice(0, -2)
    .split("\n\n")
    .map((event) => {
      if (!event.startsWith("data: ") || event.includes("\n"))
        throw new Error(`not a single-line data event: ${JSON.stringify(event)}`);
      return event.slice("data: ".length);
    });
}

export async function scriptedState(url: string) {
  return (await (await fetch(`${url}/_test/state`)).json()) as {
    calls: number;
    cancelled: number;
    lastAuthorization: string | null;
    lastRequest: Record<string, unknown>;
    lastImageBytes: number;
    lastImageSha256: string;
  };
}
