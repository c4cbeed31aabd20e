/**
 * Driving the playground page (edge/public/playground/) in a browser, shared
 * by its test and by the script that makes the README's screenshot: open it,
 * choose a picture and a request, run it, and read back the SSE streams the
 * page received, parsed, so that what the page shows can be held against
 * what the API said.
 */
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { repoRoot } from "./gpu-service.js";

/** What test/support/playground-probe.js puts on the page. */
interface Probe {
  watchStreaming(): void;
  streamingSeen(): Record<string, number>;
  clearRun(): void;
  overlay(pane: string): {
    kept: number[];
    indices: number[];
    cells: number;
    grid: Record<"left" | "top" | "width" | "height", string>;
    picture: Record<"left" | "top" | "width" | "height", string>;
  };
}

/** The page's globals with the probe (each function below runs in the page, so it names them itself). */
type WithProbe = typeof globalThis & { playgroundProbe: Probe };

/** Per pane, the DOM changes seen while it showed tokens and was still streaming (after watchStreaming). */
export const streamingSeen = (page: Page) =>
  page.evaluate(() => (globalThis as WithProbe).playgroundProbe.streamingSeen());
/** Starts counting what streamingSeen() returns. */
export const watchStreaming = (page: Page) =>
  page.evaluate(() => (globalThis as WithProbe).playgroundProbe.watchStreaming());
/** What the page drew over its picture in pane "a" or "b". */
export const overlay = (page: Page, pane: string) =>
  page.evaluate((p) => (globalThis as WithProbe).playgroundProbe.overlay(p), pane);

export interface Run {
  /** The first chunk's `twigvlm`: kept visual tokens and their grids. */
  started: {
    mode: string;
    visual_tokens: number;
    kept_visual_indices: number[];
    visual_grids: {
      first_index: number;
      rows: number;
      cols: number;
      row_stride?: number;
      source?: string;
      index?: number;
      left: number;
      top: number;
      width: number;
      height: number;
    }[];
  };
  /** Each content chunk's text, tokens and accepted draft tokens. */
  pieces: { text: string; tokens: number; draft: number }[];
  /** The final chunk's `twigvlm` statistics. */
  stats: Record<string, number>;
}

/** A chat completion stream's body, parsed (throws on an error event or a missing [DONE]). */
export function parseStream(body: string): Run {
  const events = body
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice("data: ".length));
  if (events.at(-1) !== "[DONE]") throw new Error(`the stream did not end with [DONE]: ${body.slice(-200)}`);
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  const run: Partial<Run> = { pieces: [] };
  for (const c of chunks) {
    if (c.error) throw new Error(`error event: ${c.error.message}`);
    const choice = c.choices[0];
    if (choice?.delta.role) run.started = c.twigvlm;
    else if (choice?.finish_reason) run.stats = c.twigvlm;
    else if (choice)
      run.pieces?.push({
        text: choice.delta.content,
        tokens: c.twigvlm.tokens,
        draft: c.twigvlm.accepted_draft_tokens,
      });
  }
  if (!run.started || !run.stats) throw new Error("the stream had no first or final twigvlm chunk");
  return run as Run;
}

export interface ChatRecord {
  /** Each chat completion the page requested, in order: what it sent, its status, and its body once complete. */
  seen: { request: Record<string, unknown>; status: number; body: string }[];
  /** Resolves when every body seen so far has arrived. */
  settled(): Promise<void>;
}

/** Records the chat completions the page requests from now on. */
export function recordChats(page: Page): ChatRecord {
  const seen: ChatRecord["seen"] = [];
  const pending: Promise<void>[] = [];
  page.on("response", (res) => {
    if (!res.url().endsWith("/v1/chat/completions")) return;
    const slot = { request: res.request().postDataJSON() as Record<string, unknown>, status: res.status(), body: "" };
    seen.push(slot);
    pending.push(
      res.text().then(
        (t) => {
          slot.body = t;
        },
        () => undefined,
      ),
    );
  });
  return { seen, settled: () => Promise.all(pending).then(() => undefined) };
}

/** Opens the playground and waits until it has loaded its samples and the key's models. */
export async function openPlayground(context: BrowserContext, edgeUrl: string): Promise<Page> {
  const page = await context.newPage();
  // a safety net only: every wait below is on a condition, and a slow machine may take long
  page.setDefaultTimeout(180_000);
  await page.goto(`${edgeUrl}/playground/`);
  await page.waitForSelector("body[data-ready=true]");
  await page.addScriptTag({ path: join(repoRoot, "test", "support", "playground-probe.js") });
  return page;
}

export interface Choice {
  /** The model to ask (one the key's listing offers); the page's first when not given. */
  model?: string;
  /** A sample scene's id (edge/public/playground/samples/samples.json), or a file to upload. */
  sample?: string;
  file?: string;
  question?: string;
  mode?: string;
  /** The budget option's value (an R-bar), "" for the model's default. */
  budget?: string;
}

/** Sets up the request on the page, presses Run and waits until the page is done with it. */
export async function runRequest(page: Page, choice: Choice): Promise<void> {
  if (choice.model) {
    await page.selectOption("#model", choice.model);
    // its budgets come from GET /v1/models/{id}
    await page.waitForSelector(`body[data-budgets="${choice.model}"]`);
  }
  if (choice.sample) {
    await page.click(`.sample[data-sample="${choice.sample}"]`);
    await page.waitForSelector(`body[data-picture="${choice.sample}"]`);
  }
  if (choice.file) {
    const name = choice.file.split("/").at(-1) as string;
    await page.setInputFiles("#file", choice.file);
    await page.waitForSelector(`body[data-picture="${name}"]`);
  }
  if (choice.question !== undefined) await page.fill("#question", choice.question);
  if (choice.mode) await page.selectOption("#mode", choice.mode);
  if (choice.budget !== undefined) await page.selectOption("#budget", choice.budget);
  await page.evaluate(() => (globalThis as WithProbe).playgroundProbe.clearRun());
  await page.click("#run");
  await page.waitForSelector("body[data-run=done]");
}
