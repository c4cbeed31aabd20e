/**
 * The edge's hardening through the real processes: the GPU service on the demo
 * model behind `wrangler dev` (test/support/edge-stack.ts), with a small image
 * cap (1 MiB), body cap (2 MiB), a 4 s transport timeout and a 2 s stall
 * timeout. Body caps (413, and the next request served), a shard that accepts
 * and never answers (the request goes to the next shard), a shard that stalls
 * after the first token (the stream ends with an error event), the storage
 * quota and DELETE, /healthz without auth, GIF uploads and data: URLs (an
 * animated GIF is read by its first frame), and an edge that refuses plain
 * http to a non-loopback GPU service.
 *
 * A non-stream client that goes away is not here: local workerd's HTTP
 * listener does not notice a client that leaves before the response starts
 * (test/workers/disconnect.test.ts shows it through the runtime's own path).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import OpenAI from "openai";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdgeDev } from "../../support/edge-dev.js";
import {
  chatBody,
  dataUrl,
  directAnswer,
  type EdgeStack,
  newTenant,
  startEdgeStack,
  until,
} from "../../support/edge-stack.js";
import { repoRoot } from "../../support/gpu-service.js";
import { type HangingServer, startHangingServer } from "../../support/hanging-server.js";

const IMAGE_CAP = 1024 * 1024;
const BODY_CAP = 2 * 1024 * 1024;
const QUESTION = "describe the picture .";
const MAX_TOKENS = 40;
const scene = (i: number) => readFileSync(join(repoRoot, `training/data/test/${String(i).padStart(4, "0")}.png`));

let stack: EdgeStack;
let hanging: HangingServer;
let key: string;
let expected: string;

beforeAll(async () => {
  hanging = await startHangingServer();
  stack = await startEdgeStack({
    // "demo-b": the same model, routed first to a shard that accepts and never answers
    aliases: ["demo-b"],
    routes: ({ proxy, gpu }) => ({ demo: [proxy], "demo-b": [hanging.url, gpu] }),
    vars: {
      MAX_IMAGE_BYTES: String(IMAGE_CAP),
      MAX_REQUEST_BYTES: String(BODY_CAP),
      GPU_CONNECT_TIMEOUT_MS: "4000",
      GPU_STALL_TIMEOUT_MS: "2000",
    },
  });
  key = stack.edge.secrets.DEV_API_KEY;
  expected = (
    await directAnswer(stack.gpu, { model: "demo", image: scene(0), question: QUESTION, maxTokens: MAX_TOKENS })
  ).text;
  expect(expected.length).toBeGreaterThan(0);
}, 180_000);

afterAll(async () => {
  await stack?.stop();
  await hanging?.close();
});

const post = (path: string, body: RequestInit["body"], headers: Record<string, string> = {}, auth = key) =>
  fetch(`${stack.edge.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${auth}`, ...headers },
    body,
    duplex: "half",
  });
const chat = async (body: unknown, auth = key) => ({
  res: await post("/v1/chat/completions", JSON.stringify(body), { "content-type": "application/json" }, auth),
});
const answerOf = async (res: Response) =>
  ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0].message.content;

/** The next request after a refusal: served, with the GPU service's own answer. */
async function expectServedNext() {
  const { res } = await chat(chatBody("demo", dataUrl(scene(0)), QUESTION, { max_tokens: MAX_TOKENS }));
  expect(res.status).toBe(200);
  expect(await answerOf(res)).toBe(expected);
}

/** `bytes` as a body of unknown length, in pieces of 64 KiB. */
const chunked = (bytes: Uint8Array) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (let at = 0; at < bytes.length; at += 65536) c.enqueue(bytes.subarray(at, at + 65536));
      c.close();
    },
  });

describe("body caps", () => {
  const oversized = () =>
    new TextEncoder().encode(JSON.stringify(chatBody("demo", dataUrl(scene(0)), "x".repeat(BODY_CAP))));

  it("answers 413 naming the limit for a JSON body over MAX_REQUEST_BYTES, declared or streamed, then serves the next", async () => {
    const declared = await post("/v1/chat/completions", oversized(), { "content-type": "application/json" });
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({
      error: {
        code: "request_too_large",
        message: `the request body is larger than the limit of ${BODY_CAP} bytes (MAX_REQUEST_BYTES)`,
      },
    });
    await expectServedNext();
    const streamed = await post("/v1/chat/completions", chunked(oversized()), { "content-type": "application/json" });
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toMatchObject({ error: { code: "request_too_large" } });
    await expectServedNext();
  });

  it("answers 413 for an upload over MAX_IMAGE_BYTES, raw or multipart, then serves the next", async () => {
    const big = new Uint8Array(IMAGE_CAP + 1);
    big.set(scene(1).subarray(0, 64));
    const raw = await post("/v1/files", big, { "content-type": "image/png" });
    expect(raw.status).toBe(413);
    expect(await raw.json()).toMatchObject({
      error: { code: "image_too_large", message: expect.stringContaining(`${IMAGE_CAP} bytes (MAX_IMAGE_BYTES)`) },
    });
    await expectServedNext();
    const form = new FormData();
    form.append("file", new File([big], "big.png"));
    const multipart = await post("/v1/files", form);
    expect(multipart.status).toBe(413);
    await expectServedNext();
  });
});

describe("GPU shards that fail", () => {
  it("gives up on a shard that accepts and never answers, and the request is served by the next", async () => {
    // the shards of "demo-b" rotate: within two requests one meets the hanging shard first
    let served = 0;
    for (let i = 0; i < 2 && hanging.accepted === 0; i++) {
      const { res } = await chat(chatBody("demo-b", dataUrl(scene(0)), QUESTION, { max_tokens: MAX_TOKENS }));
      expect(res.status).toBe(200);
      expect(await answerOf(res)).toBe(expected);
      served++;
    }
    expect(served).toBeGreaterThanOrEqual(1);
    expect(hanging.accepted).toBeGreaterThanOrEqual(1);
    // the edge gave up on it: it closed every connection the shard accepted
    await until(() => (hanging.closedByCaller === hanging.accepted ? true : undefined));
  });

  it("ends a stream with an error event when the GPU service stalls after the first token", async () => {
    const { pause, proxy } = stack;
    const openai = new OpenAI({ baseURL: `${stack.edge.url}/v1`, apiKey: key, maxRetries: 0 });
    const requestId = `stalls-${Date.now()}`;
    proxy.reset();
    pause.pauseAtNextFirstDelta(proxy);
    let received = "";
    try {
      const stream = await openai.chat.completions.create(
        { ...chatBody("demo", dataUrl(scene(0)), QUESTION), stream: true, max_tokens: MAX_TOKENS } as never,
        { headers: { "x-request-id": requestId } },
      );
      const consume = async () => {
        for await (const chunk of stream as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>)
          received += chunk.choices[0]?.delta.content ?? "";
      };
      await expect(consume()).rejects.toThrow(
        /the generation failed after it started: the GPU service stopped sending/,
      );
      expect(pause.paused).toBe(true);
    } finally {
      pause.resume();
    }
    expect(received.length).toBeGreaterThan(0);
    expect(expected.startsWith(received)).toBe(true);
    // the edge hung up on the stalled service, which then counted the answer as cancelled
    const lines = await until(() => {
      const found = pause.logLines(requestId);
      return found.length > 0 ? found : undefined;
    });
    expect(lines).toEqual([expect.objectContaining({ code: "Canceled" })]);
    expect(proxy.cancelled).toBe(1);
  });
});

describe("the storage quota and DELETE", () => {
  const upload = (auth: string, png: Uint8Array) => post("/v1/files", png, { "content-type": "image/png" }, auth);
  const call = (auth: string, path: string, method = "GET") =>
    fetch(`${stack.edge.url}${path}`, { method, headers: { authorization: `Bearer ${auth}` } });

  it("refuses an upload past the quota with a clear 429, and DELETE gives the room back", async () => {
    const t = await newTenant(stack.edge, { storage_files: 2 });
    const first = (await (await upload(t.key, scene(1))).json()) as { id: string };
    expect((await upload(t.key, scene(2))).status).toBe(201);
    const refused = await upload(t.key, scene(3));
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await refused.json()).toMatchObject({
      error: {
        code: "storage_quota_exceeded",
        message: expect.stringMatching(/storage quota exceeded: the tenant stores 2 of 2 files/),
      },
    });
    const del = await call(t.key, `/v1/files/${first.id}`, "DELETE");
    expect(await del.json()).toEqual({ id: first.id, object: "file", deleted: true });
    expect((await call(t.key, `/v1/files/${first.id}`)).status).toBe(404);
    expect((await call(t.key, `/v1/files/${first.id}/content`)).status).toBe(404);
    const use = await chat(chatBody("demo", first.id, QUESTION, { max_tokens: MAX_TOKENS }), t.key);
    expect(use.res.status).toBe(404);
    expect(await use.res.json()).toMatchObject({ error: { code: "file_not_found" } });
    // the room is back: the third upload is taken, and answered about
    const third = await upload(t.key, scene(3));
    expect(third.status).toBe(201);
    const { id } = (await third.json()) as { id: string };
    const answer = await chat(chatBody("demo", id, QUESTION, { max_tokens: MAX_TOKENS }), t.key);
    expect(answer.res.status).toBe(200);
    const direct = await directAnswer(stack.gpu, {
      model: "demo",
      image: scene(3),
      question: QUESTION,
      maxTokens: MAX_TOKENS,
    });
    expect(await answerOf(answer.res)).toBe(direct.text);
  });

  it("refuses a file larger than the tenant's whole byte quota with 413", async () => {
    const t = await newTenant(stack.edge, { storage_bytes: 1000 });
    const res = await upload(t.key, scene(1));
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({
      error: { code: "storage_quota_exceeded", message: expect.stringContaining("whole storage quota of 1000 bytes") },
    });
  });
});

describe("GIF", () => {
  it("answers about a GIF upload and a data:image/gif URL as the GPU service does about the same bytes", async () => {
    const gif = await sharp(scene(4)).gif().toBuffer();
    const direct = await directAnswer(stack.gpu, {
      model: "demo",
      image: gif,
      question: QUESTION,
      maxTokens: MAX_TOKENS,
    });
    expect(direct.text.length).toBeGreaterThan(0);
    const up = await post("/v1/files", gif, { "content-type": "image/gif" });
    expect(up.status).toBe(201);
    const file = (await up.json()) as { id: string; content_type: string };
    expect(file.content_type).toBe("image/gif");
    let answered = 0;
    for (const image of [file.id, dataUrl(gif, "image/gif")]) {
      const { res } = await chat(chatBody("demo", image, QUESTION, { max_tokens: MAX_TOKENS }));
      expect(res.status).toBe(200);
      expect(await answerOf(res)).toBe(direct.text);
      answered++;
    }
    expect(answered).toBe(2);
  });

  it("reads an animated GIF by its first frame", async () => {
    const frames = [await sharp(scene(5)).png().toBuffer(), await sharp(scene(6)).png().toBuffer()];
    const animated = await sharp(frames, { join: { animated: true } })
      .gif()
      .toBuffer();
    expect((await sharp(animated, { animated: true }).metadata()).pages).toBe(2);
    const firstFrame = await sharp(animated, { pages: 1 }).gif().toBuffer();
    const direct = await directAnswer(stack.gpu, {
      model: "demo",
      image: firstFrame,
      question: QUESTION,
      maxTokens: MAX_TOKENS,
    });
    const { res } = await chat(chatBody("demo", dataUrl(animated, "image/gif"), QUESTION, { max_tokens: MAX_TOKENS }));
    expect(res.status).toBe(200);
    expect(await answerOf(res)).toBe(direct.text);
  });
});

describe("/healthz", () => {
  it("says only ok without auth, and the GPU service's status with the admin token", async () => {
    const open = await fetch(`${stack.edge.url}/healthz`);
    expect(open.status).toBe(200);
    expect(await open.json()).toEqual({ status: "ok" });
    const detailed = await fetch(`${stack.edge.url}/healthz`, {
      headers: { authorization: `Bearer ${stack.edge.secrets.ADMIN_TOKEN}` },
    });
    expect(await detailed.json()).toMatchObject({
      status: "ok",
      gpuService: { url: stack.gpu.url, status: "SERVING" },
      config: [],
    });
  });
});

describe("an edge configured with plain http to a non-loopback GPU service", () => {
  it("says why in its log and refuses to serve, without telling clients where its GPU services are", async () => {
    const edge = await startEdgeDev({
      GPU_SERVICE_URL: stack.gpu.url,
      MODEL_ROUTES: JSON.stringify({ demo: ["http://10.9.8.7:50651"] }),
    });
    try {
      const res = await fetch(`${edge.url}/v1/models`, {
        headers: { authorization: `Bearer ${edge.secrets.DEV_API_KEY}` },
      });
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).not.toContain("10.9.8.7");
      expect(JSON.parse(text)).toMatchObject({ error: { code: "edge_misconfigured" } });
      const health = await fetch(`${edge.url}/healthz`);
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ status: "degraded" });
      // the log says why, at startup (before wrangler reports the edge ready) and in full
      // biome-ignore lint/suspicious/noControlCharactersInRegex: wrangler colours its log with ANSI escapes
      const log = edge.output().replace(/\u001b\[[0-9;]*m/g, "");
      const why = log.indexOf("TwigServe edge: refusing to serve, the configuration is unsafe or malformed:");
      expect(why).toBeGreaterThan(-1);
      expect(why).toBeLessThan(log.indexOf("Ready on"));
      expect(log).toContain(
        'MODEL_ROUTES["demo"][0] is plain http to a non-loopback host (10.9.8.7:50651): use https://',
      );
    } finally {
      await edge.stop();
    }
  });
});

describe("an edge given a malformed DEV_API_KEY", () => {
  it("says so in its log at startup and serves every request as usual", async () => {
    const edge = await startEdgeDev({
      GPU_SERVICE_URL: stack.gpu.url,
      MODEL_ROUTES: JSON.stringify({ demo: [stack.gpu.url] }),
      DEV_API_KEY: "sk-twig-not-a-real-key",
    });
    try {
      const t = await newTenant(edge);
      const res = await fetch(`${edge.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
        body: JSON.stringify(chatBody("demo", dataUrl(scene(0)), QUESTION, { max_tokens: MAX_TOKENS })),
      });
      expect(res.status).toBe(200);
      expect(await answerOf(res)).toBe(expected);
      // the malformed key itself is just an unknown key
      const refused = await fetch(`${edge.url}/v1/models`, {
        headers: { authorization: "Bearer sk-twig-not-a-real-key" },
      });
      expect(refused.status).toBe(401);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: wrangler colours its log with ANSI escapes
      const log = edge.output().replace(/\u001b\[[0-9;]*m/g, "");
      const why = log.indexOf("TwigServe: DEV_API_KEY is malformed (expected sk-twig- and 43 base64url characters)");
      expect(why).toBeGreaterThan(-1);
      expect(why).toBeLessThan(log.indexOf("Ready on"));
    } finally {
      await edge.stop();
    }
  });
});
