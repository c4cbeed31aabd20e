// @ts-check
/**
 * The playground page: a key (prefilled with the dev key only by a local
 * edge), a picture (a sample scene, or one's own dropped, pasted or chosen),
 * a question, a mode and a budget; Run streams the chosen mode's answer and
 * then the base model's on the same request, side by side.
 */
import { describeError, getJson, streamChat } from "./api.js";
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

/** @type {{src: string, width: number, height: number, name: string} | undefined} */
let picture;

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
 * Makes `blob` the picture of the next request.
 * @param {Blob} blob
 * @param {string} name
 */
async function usePicture(blob, name) {
  const src = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(/** @type {string} */ (reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
  // a file the browser cannot show still goes to the edge, which says what is wrong with it
  const size = await new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    img.onerror = () => resolve({ width: 1, height: 1 });
    img.src = src;
  });
  const chosen = { src, name, ...size };
  picture = chosen;
  document.body.dataset.picture = name;
  for (const b of document.querySelectorAll(".sample"))
    b.setAttribute("aria-pressed", String(/** @type {HTMLElement} */ (b).dataset.sample === name));
  for (const p of panes) p.reset(p.mode ?? "", chosen);
  say("");
}

async function loadSamples() {
  const samples = await (await fetch("samples/samples.json")).json();
  const box = $("samples");
  const list = $("questions");
  for (const s of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.sample = s.id;
    button.title = `${s.id}: ${s.truth}`;
    const img = document.createElement("img");
    img.src = `samples/${s.image}`;
    img.alt = s.truth;
    button.append(img);
    button.addEventListener("click", async () => {
      await usePicture(await (await fetch(`samples/${s.image}`)).blob(), s.id);
      list.replaceChildren(...s.questions.map((/** @type {string} */ q) => new Option(q)));
    });
    box.append(button);
  }
  if (samples[0]) /** @type {HTMLButtonElement} */ (box.firstElementChild).click();
}

/**
 * Streams one mode's answer into a pane; false when it failed (the message says why).
 * @param {Pane} pane
 * @param {Record<string, unknown>} body
 */
async function runPane(pane, body) {
  pane.sent();
  try {
    await streamChat(keyInput.value.trim(), body, {
      onStarted: (s) => pane.started(s),
      onPiece: (p) => {
        pane.piece(p);
        showRatio();
      },
      onFinished: (s) => pane.finished(s),
    });
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

async function run() {
  if (!picture) return say("Choose a picture first.");
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
        content: [
          { type: "image_url", image_url: { url: picture.src } },
          { type: "text", text: $("question").value },
        ],
      },
    ],
  };
  panes[0].reset(mode, picture);
  panes[1].reset("base", picture);
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
    const file = /** @type {HTMLInputElement} */ (e.target).files?.[0];
    if (file) usePicture(file, file.name);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (/** @type {DragEvent} */ e) => e.preventDefault());
  drop.addEventListener("drop", (/** @type {DragEvent} */ e) => {
    e.preventDefault();
    const file = e.dataTransfer?.files[0];
    if (file) usePicture(file, file.name);
  });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData?.files ?? [])][0];
    if (file) usePicture(file, file.name || "pasted picture");
  });
  await Promise.all([loadSamples(), loadModels()]);
  document.body.dataset.ready = "true";
}

main().catch((err) => say(describeError(err)));
