/**
 * The playground page in headless Chromium (Debian's, through playwright-core),
 * loaded from the real edge under `wrangler dev` in front of the real GPU
 * service on the demo model. What the page shows is held against the SSE
 * streams it received: the kept visual tokens drawn over the picture, the
 * tokens marked as accepted drafts, the final statistics. Screenshots go to
 * test-output/playground/ (not committed).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, startBrowser } from "../../support/browser.js";
import { type DemoStack, newTenant, startDemoStack } from "../../support/demo-stack.js";
import { repoRoot } from "../../support/gpu-service.js";
import {
  openPlayground,
  overlay,
  parseStream,
  recordChats,
  runRequest,
  streamingSeen,
  watchStreaming,
} from "../../support/playground-page.js";

const OUT = join(repoRoot, "test-output", "playground");
/** Small enough that a noisy picture of a few hundred KB is refused (413) before it reaches the model. */
const MAX_IMAGE_BYTES = 256 * 1024;

let stack: DemoStack;
let browser: Browser;

beforeAll(async () => {
  mkdirSync(OUT, { recursive: true });
  stack = await startDemoStack({ MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES) });
  browser = await startBrowser();
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
});

/** Per test: a safety net only (every wait is on a condition); a loaded 2-core machine can be slow. */
const TIMEOUT = 300_000;

describe("the playground", () => {
  it(
    "runs a sample scene in twig and base side by side: kept cells, accepted drafts, statistics",
    async () => {
      const page = await openPlayground(browser.context, stack.edge.url);
      // the local edge hands the page its dev key
      expect(await page.inputValue("#key")).toBe(stack.devKey);
      // the budgets come from GET /v1/models/demo's twigvlm (144 visual tokens, the model's default R-bar 16)
      expect(await page.locator("#budget option").allTextContents()).toEqual([
        "model default (R-bar 16)",
        "66.7% pruned (R-bar 48)",
        "77.8% pruned (R-bar 32)",
        "88.9% pruned (R-bar 16)",
      ]);
      const chats = recordChats(page);
      await watchStreaming(page);
      // R-bar 32 of the demo model's 144 visual tokens: 77.8% pruned
      await runRequest(page, { sample: "test-0001", question: "describe the picture .", mode: "twig", budget: "32" });
      await chats.settled();
      expect(await page.isHidden("#message"), (await page.textContent("#message")) ?? "").toBe(true);
      expect(chats.seen.map((c) => c.status)).toEqual([200, 200]);
      const [twig, base] = chats.seen.map((c) => parseStream(c.body));
      expect([twig.started.mode, base.started.mode]).toEqual(["twig", "base"]);

      // tokens arrived in both panes while they were still streaming
      const seen = await streamingSeen(page);
      expect(seen.a).toBeGreaterThan(0);
      expect(seen.b).toBeGreaterThan(0);

      // the overlay: the tower's 12x12 patch grid, the cells the stream reported as kept and no others
      const [grid] = twig.started.visual_grids;
      expect(twig.started.visual_grids).toHaveLength(1);
      expect(grid).toMatchObject({ first_index: 0, rows: 12, cols: 12, left: 0, top: 0, width: 1, height: 1 });
      const a = await overlay(page, "a");
      expect(a.cells).toBe(144);
      expect(a.kept).toHaveLength(twig.started.kept_visual_indices.length);
      expect(a.kept).toEqual(twig.started.kept_visual_indices);
      expect(twig.stats.visual_tokens_kept).toBe(a.kept.length);
      expect(Number(await page.getAttribute("#pane-a", "data-kept"))).toBe(a.kept.length);
      expect((await overlay(page, "b")).kept).toHaveLength(144);

      // the answers: the streamed text, the accepted drafts marked apart
      const textOf = (r: typeof twig) => r.pieces.map((p) => p.text).join("");
      expect(await page.textContent("#pane-a .answer")).toBe(textOf(twig));
      expect(await page.textContent("#pane-b .answer")).toBe(textOf(base));
      const drafted = twig.pieces.filter((p) => p.text !== "" && p.draft > 0 && p.draft === p.tokens);
      expect(drafted.length).toBeGreaterThan(0);
      expect(await page.locator("#pane-a .token.draft").allTextContents()).toEqual(drafted.map((p) => p.text));
      expect(await page.locator("#pane-b .token.draft").count()).toBe(0);

      // the final statistics, shown plainly
      const stats = (await page.textContent("#pane-a .stats")) ?? "";
      expect(stats).toContain(`${twig.stats.visual_tokens_kept} of 144`);
      expect(stats).toContain(
        `${twig.stats.accepted_tokens} of ${twig.stats.drafted_tokens} (${(100 * twig.stats.acceptance_rate).toFixed(1)}%)`,
      );
      expect(stats).toContain(`${twig.stats.mean_accepted_length.toFixed(2)} per verification`);
      const ratio = twig.stats.tokens_per_second / base.stats.tokens_per_second;
      expect(await page.textContent("#ratio")).toContain(
        `twig: ${ratio.toFixed(2)}x the base model's tokens per second`,
      );
      await page.screenshot({ path: join(OUT, "sample-scene.png"), fullPage: true });
      await page.close();
    },
    TIMEOUT,
  );

  it(
    "answers about a non-square picture of one's own, drawing the grid over the padded square",
    async () => {
      const scene = join(repoRoot, "training", "data", "test", "0003.png");
      const file = join(OUT, "wide-scene.png");
      writeFileSync(
        file,
        await sharp(scene)
          .extend({ left: 48, right: 48, background: { r: 90, g: 110, b: 130 } })
          .png()
          .toBuffer(),
      );
      expect(await sharp(file).metadata()).toMatchObject({ width: 192, height: 96 });
      const page = await openPlayground(browser.context, stack.edge.url);
      const chats = recordChats(page);
      await runRequest(page, { file, question: "how many objects are there ?", mode: "twig", budget: "" });
      await chats.settled();
      expect(await page.isHidden("#message"), (await page.textContent("#message")) ?? "").toBe(true);
      const [twig] = chats.seen.map((c) => parseStream(c.body));
      expect((await page.textContent("#pane-a .answer"))?.trim()).not.toBe("");
      expect(await page.getAttribute("#pane-a", "data-state")).toBe("done");
      // the 2:1 picture padded to a square: the grid reaches half the picture's height past each edge
      expect(twig.started.visual_grids).toEqual([
        { first_index: 0, rows: 12, cols: 12, left: 0, top: -0.5, width: 1, height: 2 },
      ]);
      const a = await overlay(page, "a");
      expect(a.kept).toEqual(twig.started.kept_visual_indices);
      expect(a.grid).toEqual({ left: "0%", top: "0%", width: "100%", height: "100%" });
      expect(a.picture).toEqual({ left: "0%", top: "25%", width: "100%", height: "50%" });
      await page.screenshot({ path: join(OUT, "own-picture.png"), fullPage: true });
      await page.close();
    },
    TIMEOUT,
  );

  it(
    "draws a LLaVA-NeXT model's base view and tiles over the picture, each cell its own visual token (demo-next)",
    async () => {
      // a 192x192 test canvas of the NeXT variant: the base view and 2x2 tiles, whose rows interleave in the
      // token order (a tile's rows are a row of tiles and an image_newline apart)
      const file = join(repoRoot, "training", "data", "next-test", "0005.png");
      const page = await openPlayground(browser.context, stack.edge.url);
      const chats = recordChats(page);
      // 77.8% of the picture's own tokens pruned: sent as a share (its N depends on the picture), not an R-bar
      await runRequest(page, {
        model: "demo-next",
        file,
        question: "how many objects are there ?",
        mode: "twig",
        budget: `f${7 / 9}`,
      });
      await chats.settled();
      expect(await page.isHidden("#message"), (await page.textContent("#message")) ?? "").toBe(true);
      const [twig] = chats.seen.map((c) => parseStream(c.body));
      expect(await page.locator("#budget option").allTextContents()).toEqual([
        "model default (R-bar 83 at most)",
        "66.7% pruned (of the picture's own tokens)",
        "77.8% pruned (of the picture's own tokens)",
        "88.9% pruned (of the picture's own tokens)",
      ]);
      expect(chats.seen[0].request.twigvlm).toEqual({ mode: "twig", pruned_fraction: 7 / 9 });
      // R-bar = round(N (1 - f)) for this picture's N, R = ceil((L R-bar - N K) / (K_f - K)) with L 32, K 2, K_f 24
      const N = twig.started.visual_tokens;
      const rbar = Math.round(N * (2 / 9));
      expect(twig.stats.visual_tokens_kept).toBe(Math.ceil((32 * rbar - N * 2) / 22));
      const grids = twig.started.visual_grids;
      expect(grids.map((g) => g.source)).toEqual(["base", "tile", "tile", "tile", "tile"]);
      expect(grids.slice(1).every((g) => g.row_stride !== undefined && g.row_stride > g.cols)).toBe(true);

      // the tokens each grid lays out, by the API's rule (first_index + r * row_stride + c)
      const expected: number[] = [];
      for (const g of grids)
        for (let r = 0; r < g.rows; r++)
          for (let c = 0; c < g.cols; c++) expected.push(g.first_index + r * (g.row_stride ?? g.cols) + c);
      const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);
      expect(new Set(expected).size).toBe(expected.length);
      const a = await overlay(page, "a");
      // every cell drawn is a distinct token of its grid, and the kept ones are those the stream kept
      // (image_newline tokens, in no grid, are not drawn)
      expect(sorted(a.indices)).toEqual(sorted(expected));
      const inGrids = new Set(expected);
      const keptInGrids = twig.started.kept_visual_indices.filter((i) => inGrids.has(i));
      expect(keptInGrids.length).toBeGreaterThan(0);
      expect(sorted(a.kept)).toEqual(keptInGrids);
      // the base view and the tiles side by side; the count names every kept token, row ends too
      const views = await Promise.all(
        (await page.locator("#pane-a .view").all()).map((v) => v.getAttribute("data-view")),
      );
      expect(views).toEqual(["base view", "tiles"]);
      const kept = twig.started.kept_visual_indices.length;
      expect(twig.stats.visual_tokens_kept).toBe(kept);
      expect(Number(await page.getAttribute("#pane-a", "data-kept"))).toBe(kept);
      expect(await page.textContent("#pane-a p.kept")).toContain(
        `${kept} of ${twig.started.visual_tokens} visual tokens kept`,
      );
      await page.screenshot({ path: join(OUT, "next-tiles.png"), fullPage: true });
      // a model that names its own default share (demo-video's twig config: 2/3) says so for its default
      await page.selectOption("#model", "demo-video");
      await page.waitForSelector('body[data-budgets="demo-video"]');
      expect(await page.locator("#budget option").first().textContent()).toBe("model default (66.7% pruned)");
      await page.close();
    },
    TIMEOUT,
  );

  it(
    "answers about a clip (demo-video): a sample sent as its frames, a WebM of one's own sent as a video, each frame's kept cells drawn over it",
    async () => {
      const page = await openPlayground(browser.context, stack.edge.url);
      const chats = recordChats(page);
      const samples = JSON.parse(
        readFileSync(join(repoRoot, "edge", "public", "playground", "samples", "samples.json"), "utf8"),
      ) as { id: string; frames?: string[] }[];
      const clips = samples.filter((s) => s.frames);
      const shown = () => page.$$eval(".sample:not([hidden])", (bs) => bs.map((b) => b.getAttribute("data-sample")));
      expect(await shown()).toEqual(samples.filter((s) => !s.frames).map((s) => s.id));
      // the video model: its clips are offered instead of the pictures, and the first is chosen
      await page.selectOption("#model", "demo-video");
      await page.waitForSelector(`body[data-picture="${clips[0].id}"]`);
      expect(await shown()).toEqual(clips.map((s) => s.id));

      /** Each frame view's label and picture, in order. */
      const views = () =>
        page.$$eval("#pane-a .view", (vs) =>
          vs.map((v) => ({
            view: v.getAttribute("data-view"),
            src: v.querySelector("img")?.getAttribute("src") ?? "",
          })),
        );
      /** Every kept cell drawn is a kept token of the stream, and every kept token of a frame grid is drawn. */
      const checkKept = async (run: ReturnType<typeof parseStream>) => {
        const a = await overlay(page, "a");
        const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);
        expect(sorted(a.kept)).toEqual(sorted(run.started.kept_visual_indices));
        const perFrame = run.started.visual_grids[0].rows * run.started.visual_grids[0].cols;
        expect(a.cells).toBe(perFrame * run.started.visual_grids.length);
        expect(await page.textContent("#pane-a p.kept")).toContain(
          `the ${run.started.visual_grids.length} frames the model read, in order`,
        );
      };

      // a sample clip goes as the API's video part, its frames in order, and each frame view shows its frame
      const clip = clips[2];
      await runRequest(page, { sample: clip.id, question: "how many objects are there in the first frame ?" });
      await chats.settled();
      expect(await page.isHidden("#message"), (await page.textContent("#message")) ?? "").toBe(true);
      const frameUrls = (clip.frames ?? []).map(
        (f) =>
          `data:image/png;base64,${readFileSync(join(repoRoot, "edge", "public", "playground", "samples", f)).toString("base64")}`,
      );
      const sent = chats.seen[0].request as { messages: { content: unknown[] }[] };
      expect(sent.messages[0].content[0]).toEqual({ type: "video", video: frameUrls });
      const fromFrames = parseStream(chats.seen[0].body);
      expect(fromFrames.started.visual_grids.map((g) => [g.source, g.index])).toEqual(
        frameUrls.map((_, i) => ["frame", i]),
      );
      expect(await views()).toEqual(frameUrls.map((src, i) => ({ view: `frame ${i}`, src })));
      await checkKept(fromFrames);
      expect((await page.textContent("#pane-a .answer"))?.trim()).not.toBe("");
      await page.screenshot({ path: join(OUT, "clip-frames.png"), fullPage: true });

      // a WebM of one's own goes as it is; the page shows the frames the service sampled (n of the clip's T at
      // indices floor(i T / n)), as the browser decodes them at those frames' times. Test clip 1: seven frames,
      // the last three each unlike the one before, so a frame shown one early or late there is told apart
      const webm = join(repoRoot, "training", "data", "video-test", "0001.webm");
      const pngs = readdirSync(join(repoRoot, "training", "data", "video-test", "0001"))
        .sort()
        .map((f) => join(repoRoot, "training", "data", "video-test", "0001", f));
      const before = chats.seen.length;
      await runRequest(page, { file: webm, question: "describe the video ." });
      await chats.settled();
      expect(await page.isHidden("#message"), (await page.textContent("#message")) ?? "").toBe(true);
      const own = chats.seen[before];
      expect(own.request.messages).toEqual([
        {
          role: "user",
          content: [
            {
              type: "video_url",
              video_url: { url: `data:video/webm;base64,${readFileSync(webm).toString("base64")}` },
            },
            { type: "text", text: "describe the video ." },
          ],
        },
      ]);
      const fromVideo = parseStream(own.body);
      const n = fromVideo.started.visual_grids.length;
      expect(n).toBeGreaterThan(1);
      await checkKept(fromVideo);
      const shownFrames = await views();
      expect(shownFrames.map((v) => v.view)).toEqual(Array.from({ length: n }, (_, i) => `frame ${i}`));
      const pixels = async (input: string | Buffer) =>
        new Uint8Array(await sharp(input).removeAlpha().resize(96, 96).raw().toBuffer());
      const distance = (x: Uint8Array, y: Uint8Array) =>
        x.reduce((sum, v, i) => sum + Math.abs(v - y[i]), 0) / x.length;
      const truth = await Promise.all(pngs.map((f) => pixels(f)));
      for (const [i, v] of shownFrames.entries()) {
        expect(v.src.startsWith("data:image/png;base64,")).toBe(true);
        const seen = await pixels(Buffer.from(v.src.slice("data:image/png;base64,".length), "base64"));
        const d = truth.map((t) => distance(seen, t));
        const want = Math.floor((i * pngs.length) / n);
        const why = `frame ${i} (the clip's ${want}): mean absolute differences ${d.map((x) => x.toFixed(2))}`;
        // nearer the frame due than any frame unlike it (the clip's frames repeat between changes; the browser's
        // decoding of the lossy VP9 is about 1.5 levels off the frames it was made from)
        const unlike = [...truth.keys()].filter((j) => distance(truth[j], truth[want]) > 0.5);
        expect(unlike.length, why).toBeGreaterThan(0);
        for (const j of unlike) expect(d[want], why).toBeLessThan(d[j]);
      }
      await page.screenshot({ path: join(OUT, "clip-video.png"), fullPage: true });

      // a file named as a video that is none: the edge's 400, shown as a message
      const notVideo = join(OUT, "notes.webm");
      writeFileSync(notVideo, "these are notes, not a video\n");
      await runRequest(page, { file: notVideo });
      await page.waitForSelector("#message:not([hidden])");
      expect(await page.textContent("#message")).toMatch(
        /^That video cannot be read \(400 invalid_video\): the video is not an MP4 or WebM file\.$/,
      );
      expect(await page.getAttribute("#pane-a", "data-state")).toBe("failed");
      await page.close();
    },
    TIMEOUT,
  );

  it(
    "shows errors as messages: 429 when the key's limit is hit, 401, 413 and a file that is not a picture",
    async () => {
      const page = await openPlayground(browser.context, stack.edge.url);
      const message = async () => {
        await page.waitForSelector("#message:not([hidden])");
        return (await page.textContent("#message")) ?? "";
      };
      const useKey = async (key: string, outcome: "ok" | "refused") => {
        await page.fill("#key", key);
        await page.locator("#key").dispatchEvent("change");
        await page.waitForSelector(`body[data-key=${outcome}]`);
      };
      let checked = 0;

      // a key that looks right but was never issued
      await useKey(`sk-twig-${"A".repeat(43)}`, "refused");
      expect(await message()).toMatch(/^The API key was refused \(401 invalid_api_key\)/);
      checked++;

      // one request a minute: the twig request is served, the base request after it is refused
      const limited = await newTenant(stack, { name: "one a minute", requests_per_minute: 1 });
      await useKey(limited.key, "ok");
      const chats = recordChats(page);
      await runRequest(page, { sample: "test-0000", mode: "twig", budget: "" });
      await chats.settled();
      expect(chats.seen.map((c) => c.status)).toEqual([200, 429]);
      expect(await message()).toMatch(/^Rate limit reached \(429 rate_limit_exceeded\): .* Try again in \d+ s\.$/);
      expect(await page.getAttribute("#pane-a", "data-state")).toBe("done");
      expect(await page.getAttribute("#pane-b", "data-state")).toBe("failed");
      await page.screenshot({ path: join(OUT, "rate-limited.png"), fullPage: true });
      checked++;

      // back to the dev key: a picture over the edge's MAX_IMAGE_BYTES, then a file that is not a picture
      const listings: string[] = [];
      page.on("request", (r) => {
        if (new URL(r.url()).pathname === "/v1/models") listings.push(r.headers().authorization ?? "");
      });
      await useKey(stack.devKey, "ok");
      // random pixels do not compress: about 530 KB of PNG
      const noise = randomBytes(420 * 420 * 3);
      const big = join(OUT, "noise.png");
      writeFileSync(
        big,
        await sharp(noise, { raw: { width: 420, height: 420, channels: 3 } })
          .png()
          .toBuffer(),
      );
      expect(statSync(big).size).toBeGreaterThan(MAX_IMAGE_BYTES);
      await runRequest(page, { file: big });
      expect(await message()).toMatch(/^The picture is too large \(413 image_too_large\)/);
      // the models were listed once for the new key: clicking Run took the focus from the key field,
      // and the browser's own change event then did not list them again (which cleared the message
      // whenever its answer came after the 413)
      expect(listings).toEqual([`Bearer ${stack.devKey}`]);
      checked++;
      const text = join(OUT, "notes.png");
      writeFileSync(text, "these are notes, not a picture\n");
      await runRequest(page, { file: text });
      expect(await message()).toMatch(/^That file is not a picture the service reads \(415 unsupported_image_type\)/);
      checked++;
      expect(checked).toBe(4);
      await page.close();
    },
    TIMEOUT,
  );
});
