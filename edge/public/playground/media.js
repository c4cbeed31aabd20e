// @ts-check
/**
 * What a request asks about, as the page holds it: a picture, a clip given as its frames (pictures, in
 * order), or a video file, which goes to the service as it is (the service samples its frames). Each is
 * shown by `src` (the picture, or the first frame) until the stream says what was kept.
 */

/**
 * @typedef {{kind: "picture", name: string, src: string, width: number, height: number}} Picture
 * @typedef {{kind: "frames", name: string, frames: string[], src: string, width: number, height: number}} Frames
 * @typedef {{kind: "video", name: string, url: string, src: string, width: number, height: number}} Video
 * @typedef {Picture | Frames | Video} Media
 */

/**
 * A file's bytes as a data: URL.
 * @param {Blob} blob
 * @returns {Promise<string>}
 */
export function toDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(/** @type {string} */ (reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/**
 * A picture's pixels (1 x 1 when the browser cannot show it).
 * @param {string} src
 * @returns {Promise<{width: number, height: number}>}
 */
export function sizeOf(src) {
  return new Promise((resolve) => {
    if (!src) return resolve({ width: 1, height: 1 });
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    img.onerror = () => resolve({ width: 1, height: 1 });
    img.src = src;
  });
}

/**
 * A picture as the page holds it.
 * @param {string} name
 * @param {string} src
 * @returns {Promise<Picture>}
 */
export const pictureOf = async (name, src) => ({ kind: "picture", name, src, ...(await sizeOf(src)) });

/**
 * A clip given as its frames (data: URLs, in order), shown by its first.
 * @param {string} name
 * @param {string[]} frames
 * @returns {Promise<Frames>}
 */
export const framesOf = async (name, frames) => ({
  kind: "frames",
  name,
  frames,
  src: frames[0],
  ...(await sizeOf(frames[0])),
});

/** A video file's frames as read for each count, once per video (both panes draw the same). */
const decoded = new WeakMap();

/**
 * The pictures of a clip's `count` sampled frames: the frames sent, or a video file's as this browser decodes
 * them (readFrames; none when it cannot); none for a picture.
 * @param {Media} media
 * @param {number} count
 * @returns {Promise<string[]>}
 */
export function clipFrames(media, count) {
  if (media.kind === "frames") return Promise.resolve(media.frames);
  if (media.kind !== "video" || count === 0) return Promise.resolve([]);
  const byCount = decoded.get(media) ?? new Map();
  decoded.set(media, byCount);
  if (!byCount.has(count))
    byCount.set(
      count,
      readFrames(media.url, count).catch(() => []),
    );
  return byCount.get(count);
}

/**
 * @param {HTMLMediaElement} el
 * @param {string} event
 */
const once = (el, event) =>
  new Promise((resolve, reject) => {
    el.addEventListener(event, resolve, { once: true });
    el.addEventListener("error", () => reject(new Error("this browser cannot decode the video")), { once: true });
  });

/**
 * `count` frames of a video, as PNG data: URLs, at the times of the frames the service samples: of a clip of T
 * frames it takes n = min(T, cap) at indices floor(i T / n), and the frame shown at time i D / n (D the clip's
 * duration, T / fps) is that frame, since floor(i T / n) / fps <= i D / n < (floor(i T / n) + 1) / fps. (A
 * millisecond past it, so that a time on a frame's first instant shows that frame.) Rejects when the browser
 * cannot decode the video.
 * @param {string} url
 * @param {number} count
 * @returns {Promise<string[]>}
 */
export async function readFrames(url, count) {
  const video = document.createElement("video");
  video.muted = true;
  video.preload = "auto";
  const loaded = once(video, "loadeddata");
  video.src = url;
  await loaded;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  const frames = [];
  for (let i = 0; i < count; i++) {
    const seeked = once(video, "seeked");
    video.currentTime = Math.min((i * video.duration) / count + 0.001, video.duration);
    await seeked;
    ctx.drawImage(video, 0, 0);
    frames.push(canvas.toDataURL("image/png"));
  }
  video.removeAttribute("src");
  video.load();
  return frames;
}
