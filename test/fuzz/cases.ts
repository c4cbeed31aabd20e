/**
 * The edge fuzz test's hostile requests, drawn by a seeded generator (mulberry32)
 * from the corpus (corpus.ts) and from mutations of a good request. Every case
 * is wrong by construction (a field given a value it may not take, text that
 * cannot parse as JSON, an image that cannot decode, a body over its cap, a
 * missing or bad key...), so the only right answer is a 4xx.
 *
 * A case is either a request for fetch, or raw bytes for a socket (what fetch
 * refuses to send: control characters in headers and in the request line).
 */

export type Category =
  | "malformed-json"
  | "wrong-types"
  | "huge-bodies"
  | "deep-nesting"
  | "broken-multipart"
  | "bad-images"
  | "control-chars"
  | "bad-auth";

export const CATEGORIES: Category[] = [
  "malformed-json",
  "wrong-types",
  "huge-bodies",
  "deep-nesting",
  "broken-multipart",
  "bad-images",
  "control-chars",
  "bad-auth",
];

export interface FetchCase {
  category: Category;
  name: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  /** The body; `chunked` sends it as a stream of unknown length. */
  body?: Uint8Array;
  chunked?: boolean;
}

export interface RawCase {
  category: Category;
  name: string;
  /** The whole request as bytes, sent over a fresh connection. */
  raw: Buffer;
}

export type FuzzCase = FetchCase | RawCase;

/** What the cases are made from: the fuzz tenant's key, the images and files prepared before the run. */
export interface FuzzContext {
  key: string;
  /** A key that was issued and then revoked. */
  revokedKey: string;
  adminToken: string;
  model: string;
  /** A good image (a scene of the demo model's world) as a data: URL. */
  goodImage: string;
  /** Corpus images, by corpus file name, as data: URLs. */
  images: Map<string, { dataUrl: string; about: string }>;
  /** Ids of corpus images uploaded by the fuzz tenant (their magic bytes pass; their contents do not decode). */
  uploadedIds: Map<string, string>;
  /** Broken multipart bodies from the corpus. */
  multipart: { name: string; bytes: Uint8Array; contentType: string }[];
  /** Malformed JSON texts from the corpus. */
  json: { name: string; text: string }[];
  maxImageBytes: number;
  maxRequestBytes: number;
}

/** mulberry32: a small seeded generator of floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const enc = new TextEncoder();
type Json = Record<string, unknown>;

/** A good chat request, the base of the mutations. */
export function goodChat(ctx: FuzzContext, over: Json = {}): Json {
  return {
    model: ctx.model,
    temperature: 0,
    max_tokens: 16,
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: ctx.goodImage } },
          { type: "text", text: "describe the picture ." },
        ],
      },
    ],
    ...over,
  };
}

const json = (ctx: FuzzContext, category: Category, name: string, body: unknown, headers: Json = {}): FetchCase => ({
  category,
  name,
  method: "POST",
  path: "/v1/chat/completions",
  headers: {
    authorization: `Bearer ${ctx.key}`,
    "content-type": "application/json",
    ...(headers as Record<string, string>),
  },
  body: enc.encode(typeof body === "string" ? body : JSON.stringify(body)),
});

/** Sets the value at a path of keys and indices in a copy of `body`. */
function setAt(body: Json, path: (string | number)[], value: unknown): Json {
  const copy = structuredClone(body);
  let at: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>;
  at[path[path.length - 1]] = value;
  return copy;
}

const IMAGE_PART = ["messages", 0, "content", 0];
const TEXT_PART = ["messages", 0, "content", 1];

/** Fields of a chat request, each with values it may not take. */
const WRONG: [string, (string | number)[], unknown[]][] = [
  ["model", ["model"], [42, [], {}, true, "", "m".repeat(300), "no-such-model"]],
  ["messages", ["messages"], ["hi", {}, 42, [], null]],
  ["message", ["messages", 0], ["hi", 42, null, []]],
  ["role", ["messages", 0, "role"], ["robot", 1, null, "", "tool"]],
  ["content", ["messages", 0, "content"], [42, {}, null, true, "no image here"]],
  [
    "image part",
    IMAGE_PART,
    ["x", 42, null, { type: "video" }, { type: "image_url" }, { type: "image_url", image_url: 5 }],
  ],
  [
    "image url",
    [...IMAGE_PART, "image_url", "url"],
    [
      "https://example.com/cat.png",
      "file-0000000000000000000000000000000000000000000000000000000000000000",
      "file-xyz",
      "data:image/png;base64,!!!",
      "data:image/png,rawbytes",
      "data:image/png;base64,",
      "ftp://example.com/x",
      "",
    ],
  ],
  ["text part", [...TEXT_PART, "text"], [5, null, {}, []]],
  ["part type", [...TEXT_PART, "type"], ["audio", 3, null, ["text"]]],
  ["temperature", ["temperature"], ["hot", -1, 3, true, [], {}]],
  ["top_p", ["top_p"], [2, -0.5, "a", [1]]],
  ["max_tokens", ["max_tokens"], [0, -5, 1.5, "10", 2e6, true]],
  ["max_completion_tokens", ["max_completion_tokens"], [0, "ten", 1e7]],
  ["n", ["n"], [2, 0, "1", 1.5]],
  ["stream", ["stream"], ["yes", 1, {}]],
  ["stream_options", ["stream_options"], [5, "x", []]],
  ["stop", ["stop"], [5, [1], ["a", "b", "c", "d", "e"], "", ["x".repeat(65)], {}]],
  ["seed", ["seed"], [1.5, "7", 2 ** 60, []]],
  [
    "twigvlm",
    ["twigvlm"],
    [
      5,
      "fast",
      [],
      { mode: "warp" },
      { mode: 3 },
      { mode: "constructor" },
      { retain_budget: 0 },
      { retain_budget: 1.5 },
      { draft_length: 99 },
      { draft_threshold: 2 },
      { score_source: "first-token" },
      { score_source: "__proto__" },
    ],
  ],
];

/** Whole-request shapes that are wrong: no image, two images, an image from the assistant, the last message not the user's. */
function wrongShapes(ctx: FuzzContext): [string, Json][] {
  const image = { type: "image_url", image_url: { url: ctx.goodImage } };
  return [
    ["no image", goodChat(ctx, { messages: [{ role: "user", content: "describe the picture ." }] })],
    [
      "two images",
      goodChat(ctx, { messages: [{ role: "user", content: [image, image, { type: "text", text: "?" }] }] }),
    ],
    [
      "assistant image",
      goodChat(ctx, {
        messages: [
          { role: "assistant", content: [image] },
          { role: "user", content: "what is it ?" },
        ],
      }),
    ],
    [
      "assistant last",
      goodChat(ctx, {
        messages: [
          { role: "user", content: [image] },
          { role: "assistant", content: "hi" },
        ],
      }),
    ],
    ["body is an array", [goodChat(ctx)] as unknown as Json],
  ];
}

function malformedJson(ctx: FuzzContext, r: () => number): FetchCase {
  const pick = Math.floor(r() * 4);
  const good = JSON.stringify(goodChat(ctx));
  if (pick === 0) {
    const { name, text } = ctx.json[Math.floor(r() * ctx.json.length)];
    return json(ctx, "malformed-json", `corpus ${name}`, text);
  }
  if (pick === 1) {
    // every proper prefix of a JSON object is unfinished
    const cut = 1 + Math.floor(r() * (good.length - 2));
    return json(ctx, "malformed-json", `cut at ${cut} of ${good.length}`, good.slice(0, cut));
  }
  if (pick === 2) {
    const junk = ["x", "}", ",", "]", "{}", "\u0000", "null"][Math.floor(r() * 7)];
    return json(ctx, "malformed-json", `trailing ${JSON.stringify(junk)}`, good + junk);
  }
  // a raw control character inside a string: JSON allows none
  const quotes = [...good.matchAll(/"/g)].map((m) => m.index ?? 0);
  const at = quotes[Math.floor(r() * quotes.length)] + 1;
  const ch = String.fromCharCode([0, 1, 7, 8, 11, 12, 27, 31][Math.floor(r() * 8)]);
  return json(
    ctx,
    "malformed-json",
    `control character 0x${ch.charCodeAt(0).toString(16)} in a string`,
    good.slice(0, at) + ch + good.slice(at),
  );
}

function wrongTypes(ctx: FuzzContext, r: () => number): FetchCase {
  const shapes = wrongShapes(ctx);
  if (r() < 0.15) {
    const [name, body] = shapes[Math.floor(r() * shapes.length)];
    return json(ctx, "wrong-types", name, body);
  }
  const [field, path, values] = WRONG[Math.floor(r() * WRONG.length)];
  const value = values[Math.floor(r() * values.length)];
  const shown = JSON.stringify(value) ?? String(value);
  return json(
    ctx,
    "wrong-types",
    `${field} = ${shown.length > 30 ? `${shown.slice(0, 30)}...` : shown}`,
    setAt(goodChat(ctx), path, value),
  );
}

function hugeBodies(ctx: FuzzContext, r: () => number): FetchCase {
  const pick = Math.floor(r() * 5);
  if (pick === 0) {
    // declared length up to 4x the cap: refused unread
    const size = ctx.maxRequestBytes + 1 + Math.floor(r() * ctx.maxRequestBytes * 3);
    const body = JSON.stringify(goodChat(ctx, { padding: "p".repeat(size) }));
    return json(ctx, "huge-bodies", `JSON of ${body.length} bytes, declared`, body);
  }
  if (pick === 1) {
    // no length, past the cap by up to 3 MiB (the edge drains up to 4 MiB past it)
    const size = ctx.maxRequestBytes + 1 + Math.floor(r() * 3 * 1024 * 1024);
    const c = json(
      ctx,
      "huge-bodies",
      `JSON of about ${size} bytes, chunked`,
      goodChat(ctx, { padding: "p".repeat(size) }),
    );
    return { ...c, chunked: true };
  }
  if (pick === 2) {
    // under the cap, but a prompt without its image
    const text = "word ".repeat(Math.floor((ctx.maxRequestBytes * (0.5 + r() * 0.4)) / 5));
    return json(
      ctx,
      "huge-bodies",
      `${text.length} characters of text, no image`,
      goodChat(ctx, { messages: [{ role: "user", content: text }] }),
    );
  }
  if (pick === 3) {
    const n = 1000 + Math.floor(r() * 20000);
    const messages = Array.from({ length: n }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: "hi" }));
    return json(ctx, "huge-bodies", `${n} messages, no image`, goodChat(ctx, { messages }));
  }
  // an image over MAX_IMAGE_BYTES in a body under MAX_REQUEST_BYTES
  const bytes = new Uint8Array(ctx.maxImageBytes + 1 + Math.floor(r() * 1000));
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const url = `data:image/png;base64,${Buffer.from(bytes).toString("base64")}`;
  return json(
    ctx,
    "huge-bodies",
    `an image of ${bytes.length} bytes`,
    setAt(goodChat(ctx), [...IMAGE_PART, "image_url", "url"], url),
  );
}

function deepNesting(ctx: FuzzContext, r: () => number): FetchCase {
  const depth = 65 + Math.floor(r() ** 3 * 200_000);
  const pick = Math.floor(r() * 3);
  if (pick === 0) return json(ctx, "deep-nesting", `${depth} nested arrays`, "[".repeat(depth) + "]".repeat(depth));
  if (pick === 1)
    return json(ctx, "deep-nesting", `${depth} nested objects`, `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`);
  const nested = "[".repeat(depth) + "]".repeat(depth);
  return json(
    ctx,
    "deep-nesting",
    `content nested ${depth} deep`,
    `{"model":"${ctx.model}","messages":[{"role":"user","content":${nested}}]}`,
  );
}

function brokenMultipart(ctx: FuzzContext, r: () => number): FetchCase {
  const auth = { authorization: `Bearer ${ctx.key}` };
  if (r() < 0.2) {
    // a well-formed multipart body whose image is over the cap
    const boundary = "----twigbig";
    const image = new Uint8Array(ctx.maxImageBytes + 17 * 1024);
    image.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const head = enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n`);
    const body = Buffer.concat([head, image, enc.encode(`\r\n--${boundary}--\r\n`)]);
    return {
      category: "broken-multipart",
      name: `an image of ${image.length} bytes`,
      method: "POST",
      path: "/v1/files",
      headers: { ...auth, "content-type": `multipart/form-data; boundary=${boundary}` },
      body,
      chunked: r() < 0.5,
    };
  }
  const m = ctx.multipart[Math.floor(r() * ctx.multipart.length)];
  return {
    category: "broken-multipart",
    name: `corpus ${m.name}`,
    method: "POST",
    path: "/v1/files",
    headers: { ...auth, "content-type": m.contentType },
    body: m.bytes,
    chunked: r() < 0.3,
  };
}

function badImages(ctx: FuzzContext, r: () => number): FetchCase {
  const names = [...ctx.images.keys()];
  const name = names[Math.floor(r() * names.length)];
  const id = ctx.uploadedIds.get(name);
  if (id && r() < 0.4)
    return json(ctx, "bad-images", `uploaded ${name}`, setAt(goodChat(ctx), [...IMAGE_PART, "image_url", "url"], id));
  if (r() < 0.15) {
    // the raw upload itself: refused when its magic bytes are not an image's
    const image = ctx.images.get(name)?.dataUrl ?? "";
    const bytes = Buffer.from(image.slice(image.indexOf(",") + 1), "base64");
    if (!id)
      return {
        category: "bad-images",
        name: `upload of ${name}`,
        method: "POST",
        path: "/v1/files",
        headers: { authorization: `Bearer ${ctx.key}`, "content-type": "image/png" },
        body: bytes,
      };
  }
  const url = ctx.images.get(name)?.dataUrl ?? "";
  return json(
    ctx,
    "bad-images",
    `data: URL of ${name}`,
    setAt(goodChat(ctx), [...IMAGE_PART, "image_url", "url"], url),
  );
}

/** A raw HTTP/1.1 request with `Connection: close`. */
function raw(lines: (string | Buffer)[], body = ""): Buffer {
  const parts = lines.map((l) => (typeof l === "string" ? Buffer.from(`${l}\r\n`, "latin1") : l));
  return Buffer.concat([
    ...parts,
    Buffer.from(`Connection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, "latin1"),
  ]);
}

function controlChars(ctx: FuzzContext, r: () => number): FuzzCase {
  const ctl = String.fromCharCode([0, 1, 2, 8, 11, 12, 14, 27, 31, 127][Math.floor(r() * 10)]);
  const hex = `0x${ctl.charCodeAt(0).toString(16)}`;
  const host = "Host: 127.0.0.1";
  const pick = Math.floor(r() * 8);
  const cc = (name: string, rawBytes: Buffer): RawCase => ({ category: "control-chars", name, raw: rawBytes });
  switch (pick) {
    case 0:
      return cc(
        `${hex} in x-request-id`,
        raw(
          [
            "POST /v1/chat/completions HTTP/1.1",
            host,
            `Authorization: Bearer ${ctx.key}`,
            `X-Request-Id: abc${ctl}def`,
            "Content-Type: application/json",
          ],
          // the edge does not echo such an id (it makes a fresh one); the request itself lacks its messages
          JSON.stringify({ model: ctx.model }),
        ),
      );
    case 1:
      return cc(
        `${hex} in authorization`,
        raw([
          "GET /v1/models HTTP/1.1",
          host,
          `Authorization: Bearer ${ctx.key.slice(0, 20)}${ctl}${ctx.key.slice(20)}`,
        ]),
      );
    case 2:
      return cc(
        `${hex} in the path`,
        raw([`GET /v1/files/file-${ctl}abc HTTP/1.1`, host, `Authorization: Bearer ${ctx.key}`]),
      );
    case 3:
      return cc(
        `${hex} in content-type`,
        raw(
          ["POST /v1/files HTTP/1.1", host, `Authorization: Bearer ${ctx.key}`, `Content-Type: image/png${ctl}`],
          "x",
        ),
      );
    case 4:
      // bytes 0x80-0xff are legal header octets (obs-text): the request reaches the edge, which refuses the id and the key
      return cc(
        "obs-text in x-request-id, an unknown key",
        raw([
          "GET /v1/models HTTP/1.1",
          host,
          `Authorization: Bearer sk-twig-${"Z".repeat(43)}`,
          Buffer.from("X-Request-Id: caf\xe9\xff\r\n", "latin1"),
        ]),
      );
    case 5: {
      // percent-encoded control characters in a file id: a 404
      const enc2 = encodeURIComponent(ctl);
      return {
        category: "control-chars",
        name: `${hex} percent-encoded in a file id`,
        method: "GET",
        path: `/v1/files/file-${enc2}${enc2}abc/content`,
        headers: { authorization: `Bearer ${ctx.key}` },
      };
    }
    case 6:
      // escaped control characters in JSON strings: parse, then refused for what they say
      return json(ctx, "control-chars", `${hex} escaped in the model name`, { ...goodChat(ctx), model: `de${ctl}mo` });
    default:
      return {
        category: "control-chars",
        name: `${hex} escaped in a file id`,
        method: "DELETE",
        path: `/v1/files/${encodeURIComponent(`file-${ctl}`)}`,
        headers: { authorization: `Bearer ${ctx.key}` },
      };
  }
}

function badAuth(ctx: FuzzContext, r: () => number): FetchCase {
  const auths: [string, Record<string, string>][] = [
    ["no authorization", {}],
    ["Basic scheme", { authorization: `Basic ${Buffer.from("user:pass").toString("base64")}` }],
    ["Bearer alone", { authorization: "Bearer" }],
    ["short key", { authorization: "Bearer sk-twig-short" }],
    ["unknown key", { authorization: `Bearer sk-twig-${"A".repeat(43)}` }],
    ["revoked key", { authorization: `Bearer ${ctx.revokedKey}` }],
    ["key with a tail", { authorization: `Bearer ${ctx.key}x` }],
    ["two tokens", { authorization: `Bearer ${ctx.key} ${ctx.key}` }],
    ["admin token as a key", { authorization: `Bearer ${ctx.adminToken}` }],
    ["key of another shape", { authorization: `Bearer sk-${"b".repeat(48)}` }],
    ["very long key", { authorization: `Bearer sk-twig-${"c".repeat(8000)}` }],
  ];
  const [name, headers] = auths[Math.floor(r() * auths.length)];
  if (r() < 0.25) {
    // the admin API with an API key or nothing
    const admin: [string, Record<string, string>][] = [
      ["admin API without a token", {}],
      ["admin API with an API key", { authorization: `Bearer ${ctx.key}` }],
      ["admin API with a wrong token", { authorization: `Bearer ${ctx.adminToken}x` }],
    ];
    const [n, h] = admin[Math.floor(r() * admin.length)];
    return {
      category: "bad-auth",
      name: n,
      method: "POST",
      path: "/admin/tenants",
      headers: { ...h, "content-type": "application/json" },
      body: enc.encode('{"name": "mallory"}'),
    };
  }
  const route = Math.floor(r() * 3);
  if (route === 0) return { category: "bad-auth", name: `${name}, models`, method: "GET", path: "/v1/models", headers };
  if (route === 1)
    return {
      ...json(ctx, "bad-auth", `${name}, chat`, goodChat(ctx)),
      headers: { ...headers, "content-type": "application/json" },
    };
  return {
    category: "bad-auth",
    name: `${name}, upload`,
    method: "POST",
    path: "/v1/files",
    headers: { ...headers, "content-type": "image/png" },
    body: enc.encode("\x89PNG\r\n\x1a\n0000"),
  };
}

const MAKERS: Record<Category, (ctx: FuzzContext, r: () => number) => FuzzCase> = {
  "malformed-json": malformedJson,
  "wrong-types": wrongTypes,
  "huge-bodies": hugeBodies,
  "deep-nesting": deepNesting,
  "broken-multipart": brokenMultipart,
  "bad-images": badImages,
  "control-chars": controlChars,
  "bad-auth": badAuth,
};

/** `count` hostile requests, the same ones for the same seed and context. */
export function fuzzCases(ctx: FuzzContext, seed: number, count: number): FuzzCase[] {
  const r = rng(seed);
  return Array.from({ length: count }, () => MAKERS[CATEGORIES[Math.floor(r() * CATEGORIES.length)]](ctx, r));
}
