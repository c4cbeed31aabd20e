/**
 * The edge fuzz test: 1,000 hostile requests (test/fuzz/cases.ts), drawn by a
 * seeded generator from the corpus in test/fuzz/corpus/ and from mutations of
 * a good request, through `wrangler dev` in front of the real GPU service on
 * the demo model (image cap 1 MiB, JSON body cap 2 MiB), with a good request
 * after every 20th. Every hostile request must get a 4xx with an error in
 * OpenAI's shape (a message that says something, a type, a code) and a sane
 * x-request-id; none a 5xx; neither process may die; and every good request
 * (non-stream, streamed, and by an uploaded file's id, in turn) must get the
 * GPU service's own answer. A request line with raw control characters is
 * refused by workerd's HTTP parser before the edge sees it (a plain-text 400):
 * counted apart, as "HTTP layer". Prints a table by category.
 *
 * TWIG_FUZZ_SEED picks another seed (default 26); the same seed sends the same
 * requests.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CATEGORIES,
  type Category,
  type FetchCase,
  type FuzzCase,
  type FuzzContext,
  fuzzCases,
  goodChat,
} from "../../fuzz/cases.js";
import { type CorpusEntry, corpusFiles } from "../../fuzz/corpus.js";
import { dataUrl, directAnswer, type EdgeStack, startEdgeStack } from "../../support/edge-stack.js";
import { repoRoot } from "../../support/gpu-service.js";

const SEED = Number(process.env.TWIG_FUZZ_SEED ?? 26);
const HOSTILE = 1000;
const GOOD_EVERY = 20;
const IMAGE_CAP = 1024 * 1024;
const BODY_CAP = 2 * 1024 * 1024;
const MAX_TOKENS = 16;
const QUESTION = "describe the picture .";
const corpusDir = join(repoRoot, "test/fuzz/corpus");
const SANE_ID = /^[A-Za-z0-9._-]{1,128}$/;

let stack: EdgeStack;
let ctx: FuzzContext;
let goodFileId: string;
let expected: string;

interface Answer {
  status: number;
  contentType: string;
  requestId: string | null;
  body: string;
}

/** An answer read off a raw connection: complete once its headers and Content-Length bytes have come. */
function parseAnswer(got: Buffer): Answer | undefined {
  const split = got.indexOf("\r\n\r\n");
  if (split < 0) return undefined;
  const head = got.subarray(0, split).toString("latin1").split("\r\n");
  const header = (name: string) =>
    head
      .find((l) => l.toLowerCase().startsWith(`${name}:`))
      ?.slice(name.length + 1)
      .trim() ?? null;
  const length = Number(header("content-length") ?? Number.NaN);
  const body = got.subarray(split + 4);
  if (!(body.length >= length)) return undefined;
  return {
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head[0] ?? "")?.[1] ?? 0),
    contentType: header("content-type") ?? "",
    requestId: header("x-request-id"),
    body: body.subarray(0, length).toString("utf8"),
  };
}

/** Sends raw bytes over a fresh connection and reads the answer (the connection is closed after it). */
function sendRaw(raw: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(stack.edge.url).port), "127.0.0.1");
    let got = Buffer.alloc(0);
    let done = false;
    const finish = (a: Answer | Error) => {
      if (done) return;
      done = true;
      socket.destroy();
      if (a instanceof Error) reject(a);
      else resolve(a);
    };
    socket.on("data", (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const a = parseAnswer(got);
      if (a) finish(a);
    });
    socket.on("error", (err) => finish(err));
    socket.on("close", () => finish(parseAnswer(got) ?? new Error(`the connection closed after ${got.length} bytes`)));
    socket.write(raw);
  });
}

/** A fetch-like case as a raw HTTP/1.1 request: its body with a Content-Length, or chunked. */
function rawRequest(c: FetchCase): Buffer {
  const headers = Object.entries(c.headers).map(([k, v]) => `${k}: ${v}\r\n`);
  const head = (framing: string) =>
    Buffer.from(
      `${c.method} ${c.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers.join("")}${framing}\r\n`,
    );
  const body = c.body ?? new Uint8Array(0);
  if (!c.chunked) return Buffer.concat([head(`Content-Length: ${body.length}\r\n`), Buffer.from(body)]);
  const pieces: Buffer[] = [head("Transfer-Encoding: chunked\r\n")];
  for (let at = 0; at < body.length; at += 65536) {
    const piece = body.subarray(at, at + 65536);
    pieces.push(Buffer.from(`${piece.length.toString(16)}\r\n`), Buffer.from(piece), Buffer.from("\r\n"));
  }
  pieces.push(Buffer.from("0\r\n\r\n"));
  return Buffer.concat(pieces);
}

/** Every case goes over a fresh connection, so that no request inherits the state of another's. */
const send = (c: FuzzCase): Promise<Answer> => sendRaw("raw" in c ? c.raw : rawRequest(c));

/** Why an answer to a hostile request is not acceptable, or undefined when it is; `httpLayer` when workerd refused it. */
function judge(a: Answer): string | "httpLayer" | undefined {
  if (a.status >= 500 || a.status === 0) return `status ${a.status}`;
  if (a.status < 400) return `status ${a.status} for a hostile request`;
  if (a.contentType.startsWith("text/plain") && a.status === 400 && a.requestId === null) return "httpLayer";
  if (!a.contentType.startsWith("application/json")) return `content-type ${a.contentType}`;
  if (!a.requestId || !SANE_ID.test(a.requestId)) return `x-request-id ${JSON.stringify(a.requestId)}`;
  let error: Record<string, unknown> | undefined;
  try {
    error = (JSON.parse(a.body) as { error?: Record<string, unknown> }).error;
  } catch {
    return `a body that is not JSON: ${a.body.slice(0, 80)}`;
  }
  if (!error) return `no error object: ${a.body.slice(0, 80)}`;
  if (typeof error.message !== "string" || error.message.length < 10) return `message ${JSON.stringify(error.message)}`;
  if (typeof error.type !== "string") return `type ${JSON.stringify(error.type)}`;
  if (!("code" in error) || !("param" in error)) return `fields ${Object.keys(error).join(",")}`;
  return undefined;
}

/** The good requests, in turn: non-stream by data: URL, streamed, non-stream by file id. */
async function good(n: number): Promise<string> {
  const kind = n % 3;
  const image = kind === 2 ? goodFileId : ctx.goodImage;
  const res = await fetch(`${stack.edge.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${ctx.key}`, "content-type": "application/json" },
    body: JSON.stringify(goodChat({ ...ctx, goodImage: image }, { stream: kind === 1, max_tokens: MAX_TOKENS })),
  });
  if (res.status !== 200) return `good request ${n} answered ${res.status}: ${(await res.text()).slice(0, 200)}`;
  let text = "";
  if (kind === 1) {
    const events = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: "));
    if (events.at(-1) !== "data: [DONE]") return `good stream ${n} did not end with [DONE]`;
    for (const e of events.slice(0, -1)) text += JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? "";
  } else text = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0].message.content;
  return text === expected ? "" : `good request ${n} answered ${JSON.stringify(text)}, not ${JSON.stringify(expected)}`;
}

beforeAll(async () => {
  stack = await startEdgeStack({ vars: { MAX_IMAGE_BYTES: String(IMAGE_CAP), MAX_REQUEST_BYTES: String(BODY_CAP) } });
  const { edge } = stack;
  const admin = { authorization: `Bearer ${edge.secrets.ADMIN_TOKEN}`, "content-type": "application/json" };
  const post = async (path: string, body?: unknown, method = "POST") => {
    const res = await fetch(`${edge.url}${path}`, {
      method,
      headers: admin,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, string>;
  };
  // limits the run cannot reach: refusals here come from the requests, not from the tenant's budget
  const tenant = await post("/admin/tenants", {
    name: "fuzz",
    requests_per_minute: 1_000_000,
    tokens_per_minute: 1_000_000_000,
    concurrent_streams: 100,
    storage_files: 10_000,
  });
  const key = (await post(`/admin/tenants/${tenant.id}/keys`)).key;
  const revoked = await post(`/admin/tenants/${tenant.id}/keys`);
  await post(`/admin/keys/${revoked.id}`, undefined, "DELETE");

  const index = JSON.parse(readFileSync(join(corpusDir, "corpus.json"), "utf8")) as CorpusEntry[];
  const read = (e: CorpusEntry) => readFileSync(join(corpusDir, e.file));
  const upload = (bytes: Buffer) =>
    fetch(`${edge.url}/v1/files`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/octet-stream" },
      body: bytes,
    });
  // corrupt images whose magic bytes pass are stored; the requests then ask about them by id
  const uploadedIds = new Map<string, string>();
  for (const e of index.filter((e) => e.kind === "image")) {
    const res = await upload(read(e));
    if (res.status === 201) uploadedIds.set(e.file, ((await res.json()) as { id: string }).id);
    else await res.body?.cancel();
  }
  const scene = readFileSync(join(repoRoot, "training/data/test/0000.png"));
  goodFileId = ((await (await upload(scene)).json()) as { id: string }).id;
  expected = (await directAnswer(stack.gpu, { model: "demo", image: scene, question: QUESTION, maxTokens: MAX_TOKENS }))
    .text;
  ctx = {
    key,
    revokedKey: revoked.key,
    adminToken: edge.secrets.ADMIN_TOKEN,
    model: "demo",
    goodImage: dataUrl(scene),
    images: new Map(
      index
        .filter((e) => e.kind === "image")
        .map((e) => [e.file, { dataUrl: `data:image/png;base64,${read(e).toString("base64")}`, about: e.about }]),
    ),
    uploadedIds,
    multipart: index
      .filter((e) => e.kind === "multipart")
      .map((e) => ({ name: e.file, bytes: read(e), contentType: e.contentType ?? "" })),
    json: index.filter((e) => e.kind === "json").map((e) => ({ name: e.file, text: read(e).toString("latin1") })),
    maxImageBytes: IMAGE_CAP,
    maxRequestBytes: BODY_CAP,
  };
}, 240_000);

afterAll(async () => {
  await stack?.stop();
});

describe("the edge fuzz test", () => {
  it("has a corpus that is what test/fuzz/corpus.ts builds", () => {
    const built = corpusFiles();
    const index = JSON.parse(readFileSync(join(corpusDir, "corpus.json"), "utf8")) as CorpusEntry[];
    expect(index).toEqual(built.map((f) => f.entry));
    let checked = 0;
    for (const { entry, bytes } of built) {
      const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
      expect(sha(readFileSync(join(corpusDir, entry.file))), entry.file).toBe(sha(bytes));
      checked++;
    }
    expect(checked).toBe(built.length);
    expect(checked).toBeGreaterThan(30);
  });

  it(`answers ${HOSTILE} hostile requests with 4xx errors in OpenAI's shape and keeps serving good ones (seed ${SEED})`, async () => {
    const cases = fuzzCases(ctx, SEED, HOSTILE);
    const byCategory = new Map<Category, { sent: number; ms: number; statuses: Map<string, number> }>(
      CATEGORIES.map((c) => [c, { sent: 0, ms: 0, statuses: new Map() }]),
    );
    const failures: string[] = [];
    let goods = 0;
    let httpLayer = 0;
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i];
      let verdict: string | undefined;
      let status = "no answer";
      const t0 = performance.now();
      try {
        const a = await send(c);
        status = String(a.status);
        verdict = judge(a);
        if (verdict && verdict !== "httpLayer") verdict += ` (${a.body.slice(0, 160)})`;
      } catch (err) {
        verdict = `no answer: ${(err as Error).message}`;
      }
      if (verdict === "httpLayer") {
        httpLayer++;
        status = "400 (HTTP layer)";
      } else if (verdict) failures.push(`#${i} ${c.category} / ${c.name}: ${verdict}`);
      const row = byCategory.get(c.category);
      if (!row) throw new Error(`no category ${c.category}`);
      row.sent++;
      row.ms += performance.now() - t0;
      row.statuses.set(status, (row.statuses.get(status) ?? 0) + 1);
      if ((i + 1) % GOOD_EVERY === 0) {
        const wrong = await good(goods++);
        if (wrong) failures.push(`after #${i}: ${wrong}`);
      }
    }

    const statuses = [...new Set([...byCategory.values()].flatMap((r) => [...r.statuses.keys()]))].sort();
    const table = [
      `| category | requests | ${statuses.join(" | ")} | ms per request |`,
      `|---|---|${statuses.map(() => "---|").join("")}---|`,
      ...[...byCategory].map(
        ([cat, r]) =>
          `| ${cat} | ${r.sent} | ${statuses.map((s) => r.statuses.get(s) ?? 0).join(" | ")} | ${(r.ms / r.sent).toFixed(0)} |`,
      ),
      `| good requests between them | ${goods} | answered as the GPU service answers directly: ${goods - failures.filter((f) => f.startsWith("after")).length} |`,
    ].join("\n");
    console.log(`edge fuzz, seed ${SEED}: ${cases.length} hostile requests, ${goods} good ones\n${table}`);
    if (failures.length > 0) console.log(`failures:\n${failures.slice(0, 40).join("\n")}`);

    expect(failures).toEqual([]);
    expect([...byCategory.values()].reduce((n, r) => n + r.sent, 0)).toBe(HOSTILE);
    expect(goods).toBe(HOSTILE / GOOD_EVERY);
    // every category was drawn, and the HTTP layer refused only a few (raw control characters in the request line)
    for (const [cat, r] of byCategory) expect(r.sent, cat).toBeGreaterThan(50);
    expect(httpLayer).toBeLessThan(byCategory.get("control-chars")?.sent ?? 0);
    // both processes are still up, and the edge still reports the GPU service serving
    expect(stack.edge.child.exitCode).toBeNull();
    expect(stack.gpu.child.exitCode).toBeNull();
    const health = await fetch(`${stack.edge.url}/healthz`);
    expect(await health.json()).toEqual({ status: "ok" });
  }, 1_800_000);
});
