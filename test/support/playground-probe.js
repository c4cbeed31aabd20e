// @ts-check
/**
 * Runs inside the playground page (added with page.addScriptTag by
 * playground-page.ts): reads back what the page drew, and watches its panes
 * while they stream. Plain browser JavaScript, checked against the DOM types.
 */

/** @type {Record<string, number>} per pane, DOM changes seen while it showed tokens and was still streaming */
const streamingSeen = { a: 0, b: 0 };

/** @param {string} p */
const pane = (p) => /** @type {HTMLElement} */ (document.getElementById(`pane-${p}`));

/** @param {Element | null} el */
function box(el) {
  const s = /** @type {HTMLElement} */ (el).style;
  return { left: s.left, top: s.top, width: s.width, height: s.height };
}

const probe = {
  /** Starts counting, per pane, the DOM changes seen while the pane shows tokens and is still streaming. */
  watchStreaming() {
    new MutationObserver(() => {
      for (const p of ["a", "b"]) {
        if (pane(p).dataset.state === "streaming" && pane(p).querySelector(".answer .token")) streamingSeen[p]++;
      }
    }).observe(/** @type {Element} */ (document.querySelector(".panes")), {
      subtree: true,
      childList: true,
      attributes: true,
      characterData: true,
    });
  },
  streamingSeen: () => ({ ...streamingSeen }),
  /** Marks the page as not yet run, so that the next "done" is the next run's. */
  clearRun() {
    document.body.dataset.run = "";
  },
  /**
   * What a pane drew over its picture: the kept cells' indices, every cell's, the number of cells, where the (first)
   * grid and the picture sit in the frame.
   * @param {string} p
   */
  overlay(p) {
    const root = pane(p);
    return {
      kept: [...root.querySelectorAll(".cell.kept")].map((c) => Number(/** @type {HTMLElement} */ (c).dataset.index)),
      indices: [...root.querySelectorAll(".cell")].map((c) => Number(/** @type {HTMLElement} */ (c).dataset.index)),
      cells: root.querySelectorAll(".cell").length,
      grid: box(root.querySelector(".grid")),
      picture: box(root.querySelector(".frame img")),
    };
  },
};

Object.assign(globalThis, { playgroundProbe: probe });
