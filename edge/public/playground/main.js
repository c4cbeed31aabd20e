// @ts-check
/**
 * The playground page: a key (prefilled with the dev key only by a local
 * edge), a picture or a clip (a sample, or one's own dropped, pasted or
 * chosen: a picture, several pictures as a clip's frames, or a video file), a
 * question, a mode and a budget; Run streams the chosen mode's answer and then
 * the base model's on the same request, side by side.
 */
import { describeError, getJson, streamChat } from "./api.js";
import { framesOf, pictureOf, readFrames, sizeOf, toDataUrl } from "./media.js";
import { Pane } from "./pane.js";

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const keyInput = /** @type {HTMLInputElement} */ ($("key"));
const modelSelect = /** @type {HTMLSelectElement} */ ($("model"));
const budgetSelect = /** @type {HTMLSelectElement} */ ($("budget"));
const message = /** @type {HTMLElement} */ ($("message"));
const runButton = /** @type {HTMLButtonElement} */ ($("run"));
const template = /** @type {HTMLTemplateElement} */ ($("pane-template"));
const panes = [new Pane($("pane-a"), template), new Pane($("pane-b"), template)];

/** The pruned shares offered as budgets: the paper's three (R-bar = N/3, 2N/9, N/9). */
const PRUNED = [6 / 9, 7 / 9, 8 / 9];

/** @typedef {import("./media.js").Media} Media */

/** What the next request asks about. @type {Media | undefined} */
let media;

/** The samples (samples/samples.json): pictures, and clips given as their frames. */
/** @type {{id: string, image: string, frames?: string[], truth: string, questions: string[]}[]} */
let samples = [];

/** The kind of sample the chosen model reads best (a video model: clips). @type {"picture" | "clip"} */
let sampleKind = "picture";

/** @param {string} text */
function say(text) {
  message.textContent = text;
  message.hidden = text === "";
}

/** The key whose models are listed (or being listed): "" when none is, or the last check failed. */
let listedKey = "";

/**
 * Lists the key's models and, for the chosen one, the budgets its visual tokens allow. Only for a
 * new key: the browser's own change event when the key field loses focus (to Run, say) must not
 * list them again and clear the message of the run that click started.
 */
async function loadModels() {
  const key = keyInput.value.trim();
  if (!key || key === listedKey) return;
  listedKey = key;
  document.body.dataset.key = "checking";
  try {
    const list = await getJson("/v1/models", key);
    const chosen = modelSelect.value;
    modelSelect.replaceChildren(
      ...list.data.map((/** @type {{id: string}} */ m) => new Option(m.id, m.id, false, m.id === chosen)),
    );
    say("");
    await loadBudgets();
    document.body.dataset.key = "ok";
  } catch (err) {
    if (listedKey === key) listedKey = "";
    document.body.dataset.key = "refused";
    say(describeError(err));
  }
}

async function loadBudgets() {
  const model = modelSelect.value;
  budgetSelect.replaceChildren(new Option("model default", ""));
  delete document.body.dataset.budgets;
  if (!model) return;
  const info = (await getJson(`/v1/models/${encodeURIComponent(model)}`, keyInput.value.trim())).twigvlm;
  sampleKind = info?.video ? "clip" : "picture";
  showSamples();
  if (info?.twig) {
    const n = info.visual_tokens;
    const lo = (n * info.twig.k) / info.num_layers;
    const hi = (n * info.twig.final_wipe_layer) / info.num_layers;
    // where N follows the picture (LLaVA-NeXT) or the clip, a budget is a share of each request's own
    // tokens (pruned_fraction, "f" and the share); else an R-bar
    const vary = info.visual_tokens_vary === true;
    const own = info.twig.default_pruned_fraction;
    budgetSelect.options[0].text = own
      ? `model default (${(100 * own).toFixed(1)}% pruned)`
      : `model default (R-bar ${info.twig.default_retain_budget}${vary ? " at most" : ""})`;
    for (const f of PRUNED) {
      const r = Math.round(n * (1 - f));
      const label = `${(100 * f).toFixed(1)}% pruned (${vary ? "of the picture's own tokens" : `R-bar ${r}`})`;
      if (r >= lo && r <= hi) budgetSelect.append(new Option(label, vary ? `f${f}` : String(r)));
    }
  }
  // the model whose budgets are listed (what a test waits for)
  document.body.dataset.budgets = model;
}

/**
 * Makes `chosen` what the next request asks about.
 * @param {Media} chosen
 */
function use(chosen) {
  media = chosen;
  document.body.dataset.picture = chosen.name;
  for (const b of document.querySelectorAll(".sample"))
    b.setAttribute("aria-pressed", String(/** @type {HTMLElement} */ (b).dataset.sample === chosen.name));
  for (const p of panes) p.reset(p.mode ?? "", chosen);
  say("");
}

/**
 * A picture (sent as it is), several pictures (a clip's frames, in the order of their names), or a video file
 * (sent as it is; the service samples its frames).
 * @param {File[]} files
 * @param {string} [name] the name shown for a pasted file
 */
async function useFiles(files, name) {
  if (files.length === 0) return;
  if (files.length > 1) {
    const ordered = [...files].sort((x, y) => x.name.localeCompare(y.name, undefined, { numeric: true }));
    return use(await framesOf(`${ordered.length} frames`, await Promise.all(ordered.map(toDataUrl))));
  }
  const [file] = files;
  const url = await toDataUrl(file);
  const label = name ?? file.name;
  if (file.type.startsWith("video/")) {
    const first = (await readFrames(url, 1).catch(() => []))[0] ?? "";
    return use({ kind: "video", name: label, url, src: first, ...(await sizeOf(first)) });
  }
  // a file the browser cannot show still goes to the edge, which says what is wrong with it
  use(await pictureOf(label, url));
}

/** @param {string} path */
const fetchDataUrl = async (path) => toDataUrl(await (await fetch(`samples/${path}`)).blob());

async function loadSamples() {
  samples = await (await fetch("samples/samples.json")).json();
  const box = $("samples");
  const list = $("questions");
  for (const s of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.sample = s.id;
    button.dataset.kind = s.frames ? "clip" : "picture";
    button.title = `${s.id}${s.frames ? ` (a clip of ${s.frames.length} frames)` : ""}: ${s.truth}`;
    const img = document.createElement("img");
    img.src = `samples/${s.image}`;
    img.alt = s.truth;
    button.append(img);
    button.addEventListener("click", async () => {
      if (s.frames) {
        use(await framesOf(s.id, await Promise.all(s.frames.map(fetchDataUrl))));
      } else {
        const src = await fetchDataUrl(s.image);
        use(await pictureOf(s.id, src));
      }
      list.replaceChildren(...s.questions.map((/** @type {string} */ q) => new Option(q)));
    });
    box.append(button);
  }
  showSamples();
}

/**
 * Shows the samples the chosen model reads best (`sampleKind`); when the chosen sample is of the other kind, the
 * first shown is chosen instead. One's own files stay chosen.
 */
function showSamples() {
  const kind = sampleKind;
  /** @type {HTMLButtonElement[]} */
  const buttons = [...document.querySelectorAll(".sample")].map((b) => /** @type {HTMLButtonElement} */ (b));
  for (const b of buttons) b.hidden = b.dataset.kind !== kind;
  const chosenSample = buttons.find((b) => b.dataset.sample === media?.name);
  if (media && !chosenSample) return;
  if (!chosenSample || chosenSample.hidden) buttons.find((b) => !b.hidden)?.click();
}

/**
 * Streams one mode's answer into a pane; false when it failed (the message says why).
 * @param {Pane} pane
 * @param {Record<string, unknown>} body
 */
async function runPane(pane, body) {
  pane.sent();
  /** @type {Promise<void>} what the pane draws of the kept tokens (a video file's frames are read first) */
  let drawn = Promise.resolve();
  try {
    await streamChat(keyInput.value.trim(), body, {
      onStarted: (s) => {
        drawn = pane.started(s);
      },
      onPiece: (p) => {
        pane.piece(p);
        showRatio();
      },
      onFinished: (s) => pane.finished(s),
    });
    await drawn;
    return true;
  } catch (err) {
    pane.failed();
    say(describeError(err));
    return false;
  }
}

function showRatio() {
  const [a, b] = panes;
  const out = $("ratio");
  if (a.engineRate && b.engineRate)
    out.textContent = `${a.mode}: ${(a.engineRate / b.engineRate).toFixed(2)}x the base model's tokens per second (${a.engineRate.toFixed(1)} against ${b.engineRate.toFixed(1)}, measured by the engine)`;
  else out.textContent = "";
}

/**
 * The request's picture or video, as a content part.
 * @param {Media} m
 */
function mediaPart(m) {
  if (m.kind === "frames") return { type: "video", video: m.frames };
  if (m.kind === "video") return { type: "video_url", video_url: { url: m.url } };
  return { type: "image_url", image_url: { url: m.src } };
}

async function run() {
  if (!media) return say("Choose a picture or a clip first.");
  if (!keyInput.value.trim()) return say("Type an API key first.");
  say("");
  runButton.disabled = true;
  document.body.dataset.run = "running";
  const mode = $("mode").value;
  const budget = budgetSelect.value;
  const common = {
    model: modelSelect.value || undefined,
    temperature: 0,
    max_tokens: Number($("max-tokens").value) || 64,
    messages: [
      {
        role: "user",
        content: [mediaPart(media), { type: "text", text: $("question").value }],
      },
    ],
  };
  panes[0].reset(mode, media);
  panes[1].reset("base", media);
  showRatio();
  try {
    // a budget is an R-bar, or ("f" and a share) the share of the request's own visual tokens to prune
    const twigvlm = !budget
      ? { mode }
      : budget.startsWith("f")
        ? { mode, pruned_fraction: Number(budget.slice(1)) }
        : { mode, retain_budget: Number(budget) };
    if (await runPane(panes[0], { ...common, twigvlm })) {
      await runPane(panes[1], { ...common, twigvlm: { mode: "base" } });
      showRatio();
    }
  } finally {
    runButton.disabled = false;
    document.body.dataset.run = "done";
  }
}

async function main() {
  const config = await (await fetch("config")).json().catch(() => ({}));
  if (config.dev_api_key) keyInput.value = config.dev_api_key;
  if (Array.isArray(config.modes) && config.modes.length > 0) {
    const modeSelect = /** @type {HTMLSelectElement} */ ($("mode"));
    modeSelect.replaceChildren(
      ...config.modes.map((/** @type {string} */ m) => new Option(m, m, m === "twig", m === "twig")),
    );
  }
  keyInput.addEventListener("change", loadModels);
  modelSelect.addEventListener("change", () => loadBudgets().catch((err) => say(describeError(err))));
  $("request").addEventListener("submit", (/** @type {Event} */ e) => {
    e.preventDefault();
    run();
  });
  $("file").addEventListener("change", (/** @type {Event} */ e) => {
    const input = /** @type {HTMLInputElement} */ (e.target);
    useFiles([...(input.files ?? [])]).catch((err) => say(describeError(err)));
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (/** @type {DragEvent} */ e) => e.preventDefault());
  drop.addEventListener("drop", (/** @type {DragEvent} */ e) => {
    e.preventDefault();
    useFiles([...(e.dataTransfer?.files ?? [])]).catch((err) => say(describeError(err)));
  });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    useFiles(files, files.length === 1 && !files[0].name ? "pasted file" : undefined).catch((err) =>
      say(describeError(err)),
    );
  });
  await Promise.all([loadSamples(), loadModels()]);
  document.body.dataset.ready = "true";
}

main().catch((err) => say(describeError(err)));
