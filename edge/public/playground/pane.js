// @ts-check
/**
 * One side of the comparison: a mode's answer to the request as it streams
 * (tokens from accepted drafts marked apart from the model's own), its live
 * tokens per second, what it kept of the picture or of each frame, and the
 * final statistics.
 */
import { clipFrames } from "./media.js";
import { showKept, showPicture } from "./overlay.js";

/** @typedef {import("./api.js").Started} Started */
/** @typedef {import("./api.js").Piece} Piece */
/** @typedef {import("./media.js").Media} Media */

export class Pane {
  /**
   * @param {HTMLElement} root
   * @param {HTMLTemplateElement} template
   */
  constructor(root, template) {
    root.replaceChildren(template.content.cloneNode(true));
    this.root = root;
    /** @param {string} sel */
    const part = (sel) => /** @type {HTMLElement} */ (root.querySelector(sel));
    this.modeEl = part(".mode");
    this.stateEl = part(".state");
    this.frame = part(".frame");
    this.keptEl = part(".kept");
    this.answer = part(".answer");
    this.rateEl = part(".rate");
    this.stats = part(".stats");
    this.tokens = 0;
    this.sentAt = 0;
    /** @type {number | undefined} tokens per second the engine measured (prefill included) */
    this.engineRate = undefined;
  }

  /**
   * Empties the pane for a new request of `mode` about the picture or clip.
   * @param {string} mode
   * @param {Media} media
   */
  reset(mode, media) {
    this.mode = mode;
    this.media = media;
    this.modeEl.textContent = mode;
    this.setState("waiting");
    showPicture(this.frame, media.src, media);
    this.keptEl.textContent = "";
    this.answer.replaceChildren();
    this.rateEl.textContent = "";
    this.stats.replaceChildren();
    this.tokens = 0;
    this.engineRate = undefined;
  }

  /** @param {"waiting" | "streaming" | "done" | "failed"} state */
  setState(state) {
    this.root.dataset.state = state;
    this.stateEl.textContent = state === "waiting" || state === "done" ? "" : state;
  }

  sent() {
    this.sentAt = performance.now();
  }

  /**
   * Draws what the stream's first event says was kept, over the picture or over each frame the model read.
   * @param {Started} started
   */
  async started(started) {
    this.setState("streaming");
    const media = this.media;
    if (!media) return;
    const frameCount = started.visual_grids.filter((g) => g.source === "frame").length;
    const frames = await clipFrames(media, frameCount);
    if (this.media !== media) return;
    const drawn = showKept(this.frame, media, frames, started);
    const kept = started.kept_visual_indices.length;
    this.root.dataset.kept = String(kept);
    const n = started.visual_tokens;
    // a LLaVA-NeXT model's image_newline tokens (one a row of its tiles) lie in no grid: counted, not drawn
    const undrawn = kept - drawn;
    const views =
      frameCount > 0
        ? `; the ${frameCount} frames the model read, in order`
        : this.frame.classList.contains("split")
          ? "; left the base view, right the tiles"
          : "";
    this.keptEl.textContent =
      `${kept} of ${n} visual tokens kept (${pct(1 - kept / n)} pruned)` +
      (undrawn > 0 ? `, ${undrawn} of them at row ends (not drawn)` : "") +
      views;
  }

  /** @param {Piece} piece */
  piece(piece) {
    if (piece.text) {
      const span = document.createElement("span");
      const drafted = piece.draftTokens > 0 && piece.draftTokens === piece.tokens;
      span.className = drafted ? "token draft" : "token";
      span.title = drafted
        ? `${piece.tokens} token${piece.tokens === 1 ? "" : "s"} drafted by the twig and accepted by the full model`
        : "the full model's own token";
      span.textContent = piece.text;
      this.answer.append(span);
    }
    this.tokens += piece.tokens;
    const seconds = (performance.now() - this.sentAt) / 1000;
    this.rateEl.textContent = `${count(this.tokens)}, ${rate(this.tokens / seconds)} tok/s live (since the request was sent)`;
  }

  /** @param {Record<string, any>} s the final chunk's `twigvlm` */
  finished(s) {
    this.setState("done");
    this.engineRate = s.tokens_per_second;
    this.rateEl.textContent = `${count(this.tokens)}, ${rate(s.tokens_per_second)} tok/s (measured by the engine, prefill included)`;
    const rows = [
      ["visual tokens kept", `${s.visual_tokens_kept} of ${s.visual_tokens}`],
      [
        "drafted tokens accepted",
        s.drafted_tokens ? `${s.accepted_tokens} of ${s.drafted_tokens} (${pct(s.acceptance_rate)})` : "no drafting",
      ],
      ["mean accepted length", s.verifications ? `${s.mean_accepted_length.toFixed(2)} per verification` : "-"],
      ["prefill", `${s.prefill_ms.toFixed(1)} ms`],
      ["first token", `${s.time_to_first_token_ms.toFixed(1)} ms`],
      ["decode", `${s.decode_ms.toFixed(1)} ms`],
    ];
    this.stats.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        dd.textContent = v;
        return [dt, dd];
      }),
    );
  }

  failed() {
    this.setState("failed");
  }
}

/** @param {number} n */
const count = (n) => `${n} token${n === 1 ? "" : "s"}`;
/** @param {number} x */
const pct = (x) => `${(100 * x).toFixed(1)}%`;
/** @param {number} x */
const rate = (x) => (Number.isFinite(x) ? x.toFixed(1) : "-");
