/**
 * Short test clips made with Debian's ffmpeg: frames as PNG, and the same frames as an MP4 (H.264) or a
 * WebM (VP9) clip. Each frame is a photo-like picture whose discs drift, so frames differ.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";

/** A PNG of width x height: a colour ramp, a disc at a place that moves with `t`, and stripes. */
export async function photoPng(width: number, height: number, t = 0): Promise<Uint8Array> {
  const px = Buffer.alloc(width * height * 3);
  const cx = ((0.2 + 0.1 * t) % 1) * width;
  const cy = 0.5 * height;
  const r = 0.25 * Math.min(width, height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const inDisc = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      const stripe = (x >> 3) % 4 === 0;
      const i = (y * width + x) * 3;
      px[i] = inDisc ? 230 : (x / width) * 200 + (stripe ? 0 : 30);
      px[i + 1] = inDisc ? 40 : (y / height) * 180 + 40;
      px[i + 2] = inDisc ? 60 + 10 * t : 120;
    }
  return new Uint8Array(
    await sharp(px, { raw: { width, height, channels: 3 } })
      .png()
      .toBuffer(),
  );
}

/** `frames` PNG frames of width x height, and the clip made of them (MP4 or WebM at 4 frames per second). */
export async function makeClip(
  frames: number,
  width: number,
  height: number,
  format: "mp4" | "webm" = "mp4",
): Promise<{ frames: Uint8Array[]; clip: Uint8Array }> {
  const dir = mkdtempSync(join(tmpdir(), "twig-clip-"));
  try {
    const pngs: Uint8Array[] = [];
    for (let f = 0; f < frames; f++) {
      pngs.push(await photoPng(width, height, f));
      writeFileSync(join(dir, `${f}.png`), pngs[f]);
    }
    const out = join(dir, `clip.${format}`);
    const codec = format === "mp4" ? ["-c:v", "libx264", "-pix_fmt", "yuv420p"] : ["-c:v", "libvpx-vp9"];
    execFileSync("ffmpeg", ["-v", "error", "-y", "-framerate", "4", "-i", join(dir, "%d.png"), ...codec, out]);
    return { frames: pngs, clip: new Uint8Array(readFileSync(out)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
