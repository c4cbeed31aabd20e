// @ts-check
/**
 * The picture with its visual tokens drawn over it: each grid of the stream's
 * `visual_grids` becomes a layer of cells over its rectangle of the picture
 * (fractions of the picture, possibly past its edges: a picture padded to a
 * square shows the padding), and each cell is marked kept or pruned from
 * `kept_visual_indices`. The frame is the smallest box holding the picture
 * and every grid, so tiles of other models fit the same way; a clip's frames
 * are views of their own, each over its own picture.
 */

/** @typedef {import("./api.js").Started} Started */

/**
 * Shows the picture alone (before the first event) in `frame`.
 * @param {HTMLElement} frame
 * @param {string} src
 * @param {{width: number, height: number}} size the picture's pixels
 */
export function showPicture(frame, src, size) {
  frame.classList.remove("split", "frames");
  place(frame, src, size, { left: 0, top: 0, right: 1, bottom: 1 });
}

/**
 * Shows the picture with its visual token grids; returns the number of kept cells drawn. Grids that lie
 * over the same picture at once go to views of their own side by side: a LLaVA-NeXT model's base view
 * (the whole picture at the tower's size) and its tiles (the picture at the grid resolution); a clip's
 * frames each over its own picture (`frames[index]`; the first frame's when missing).
 * @param {HTMLElement} frame
 * @param {{src: string, width: number, height: number}} picture the picture, or the clip's first frame
 * @param {string[]} frames
 * @param {Started} started
 */
export function showKept(frame, picture, frames, started) {
  const { src } = picture;
  const size = picture;
  const kept = new Set(started.kept_visual_indices);
  /** @type {Map<string, import("./api.js").VisualGrid[]>} */
  const views = new Map();
  for (const g of started.visual_grids) {
    const key =
      g.source === "tile" ? "tiles" : g.source === "base" ? "base view" : `${g.source ?? "picture"} ${g.index ?? ""}`;
    views.set(key, [...(views.get(key) ?? []), g]);
  }
  frame.classList.toggle("split", views.size > 1);
  frame.classList.toggle(
    "frames",
    started.visual_grids.some((g) => g.source === "frame"),
  );
  if (views.size <= 1) return drawGrids(frame, src, size, started.visual_grids, kept);
  frame.replaceChildren();
  frame.style.aspectRatio = "";
  let drawn = 0;
  for (const [label, grids] of views) {
    const view = document.createElement("div");
    view.className = "view";
    view.title = label;
    view.dataset.view = label;
    frame.append(view);
    const own = grids[0].source === "frame" ? frames[grids[0].index ?? 0] : undefined;
    drawn += drawGrids(view, own || src, size, grids, kept);
  }
  return drawn;
}

/**
 * Draws `grids` over the picture in `frame`, each cell kept or pruned; returns the kept cells drawn.
 * @param {HTMLElement} frame
 * @param {string} src
 * @param {{width: number, height: number}} size
 * @param {import("./api.js").VisualGrid[]} grids
 * @param {Set<number>} kept
 */
function drawGrids(frame, src, size, grids, kept) {
  const box = { left: 0, top: 0, right: 1, bottom: 1 };
  for (const g of grids) {
    box.left = Math.min(box.left, g.left);
    box.top = Math.min(box.top, g.top);
    box.right = Math.max(box.right, g.left + g.width);
    box.bottom = Math.max(box.bottom, g.top + g.height);
  }
  place(frame, src, size, box);
  let drawn = 0;
  for (const g of grids) {
    const layer = document.createElement("div");
    layer.className = "grid";
    Object.assign(layer.style, rect(g.left, g.top, g.width, g.height, box));
    layer.style.gridTemplateColumns = `repeat(${g.cols}, 1fr)`;
    layer.style.gridTemplateRows = `repeat(${g.rows}, 1fr)`;
    // the token at row r, column c; a LLaVA-NeXT tile's rows are `row_stride` apart (a whole row of tiles and
    // an image_newline token), other grids' rows follow one another
    const stride = g.row_stride ?? g.cols;
    for (let i = 0; i < g.rows * g.cols; i++) {
      const index = g.first_index + Math.floor(i / g.cols) * stride + (i % g.cols);
      const cell = document.createElement("div");
      const on = kept.has(index);
      cell.className = on ? "cell kept" : "cell pruned";
      cell.dataset.index = String(index);
      if (on) drawn++;
      layer.append(cell);
    }
    frame.append(layer);
  }
  return drawn;
}

/**
 * Lays out `frame` as `box` (in fractions of the picture) and puts the picture in it.
 * @param {HTMLElement} frame
 * @param {string} src
 * @param {{width: number, height: number}} size
 * @param {{left: number, top: number, right: number, bottom: number}} box
 */
function place(frame, src, size, box) {
  frame.replaceChildren();
  frame.style.aspectRatio = `${(box.right - box.left) * size.width} / ${(box.bottom - box.top) * size.height}`;
  const img = document.createElement("img");
  img.src = src;
  img.alt = "the picture";
  Object.assign(img.style, rect(0, 0, 1, 1, box));
  frame.append(img);
}

/**
 * CSS percentages placing a rectangle of the picture inside the frame's box.
 * @param {number} left
 * @param {number} top
 * @param {number} width
 * @param {number} height
 * @param {{left: number, top: number, right: number, bottom: number}} box
 */
function rect(left, top, width, height, box) {
  const w = box.right - box.left;
  const h = box.bottom - box.top;
  return {
    left: `${((left - box.left) / w) * 100}%`,
    top: `${((top - box.top) / h) * 100}%`,
    width: `${(width / w) * 100}%`,
    height: `${(height / h) * 100}%`,
  };
}
