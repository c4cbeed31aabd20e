/**
 * API keys: `sk-twig-` followed by 32 random bytes in base64url (43
 * characters). Only the hex SHA-256 of a key is ever stored; a key is shown
 * once, when it is issued.
 */

export const KEY_PREFIX = "sk-twig-";
const KEY_SHAPE = /^sk-twig-[A-Za-z0-9_-]{43}$/;

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** A fresh random API key. */
export function newApiKey(): string {
  return KEY_PREFIX + base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** True when the string has the shape of an API key (checked before any lookup). */
export function isWellFormedKey(key: string): boolean {
  return KEY_SHAPE.test(key);
}

/** Lower-case hex SHA-256 of a string. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Compares two secrets in constant time (their SHA-256 digests, so that the
 * lengths leak nothing either).
 */
export async function secretsEqual(given: string, expected: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(given)),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b);
}
