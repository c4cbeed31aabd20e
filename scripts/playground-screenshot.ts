/**
 * Makes the README's picture of the playground (docs/playground.png): the
 * demo model's GPU service and `wrangler dev` on free ports, the page in
 * headless Chromium, a sample scene described in twig mode next to base, the
 * same steps as the playground's browser test (test/support/playground-page.ts).
 *
 *   npx tsx scripts/playground-screenshot.ts [--out docs/playground.png]
 */
import { join } from "node:path";
import { startBrowser } from "../test/support/browser.js";
import { startDemoStack } from "../test/support/demo-stack.js";
import { repoRoot } from "../test/support/gpu-service.js";
import { openPlayground, runRequest } from "../test/support/playground-page.js";

process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

const at = process.argv.indexOf("--out");
const out = at > 0 ? process.argv[at + 1] : join(repoRoot, "docs", "playground.png");

const stack = await startDemoStack();
const browser = await startBrowser({ width: 1200, height: 900 });
try {
  const page = await openPlayground(browser.context, stack.edge.url);
  await runRequest(page, { sample: "test-0001", question: "describe the picture .", mode: "twig", budget: "32" });
  if (await page.isVisible("#message")) throw new Error(`the page reported: ${await page.textContent("#message")}`);
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await stack.stop();
}
