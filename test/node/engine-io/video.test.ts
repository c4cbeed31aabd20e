/**
 * Videos through Debian's ffmpeg: MP4 and WebM clips decode to the frames they were made of, sampled
 * uniformly as transformers samples them (np.arange(0, total, total / n)), and every bad video is refused
 * with a message that names the problem: not a video, too many bytes, too long, no frames, frames too
 * large, a truncated file, decoding too slow. Lists of frames: sampled the same way, one size for all.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidRequestError } from "../../../gpu-service/src/engine/errors.js";
import {
  DEFAULT_VIDEO_LIMITS,
  decodeVideo,
  inspectVideo,
  sniffVideoType,
} from "../../../gpu-service/src/engine/video/decode.js";
import { sampleFrameIndices } from "../../../gpu-service/src/engine/video/frames.js";
import { DEFAULT_MEDIA_LIMITS, prepareVisual } from "../../../gpu-service/src/engine/visual-input.js";
import type { LlavaConfig } from "../../../gpu-service/src/engine/weights.js";
import { randomNextWeights } from "../../../gpu-service/tools/make-tiny/tiny-next.js";

const dir = mkdtempSync(join(tmpdir(), "twig-video-"));
const W = 32;
const H = 24;
const FRAMES = 12;

/** Frame f: a flat colour that changes from frame to frame (so that a frame is recognised by its colour). */
const colourOf = (f: number) => [20 * f + 10, 200 - 12 * f, (f * 37) % 256];

async function frame(f: number, width = W, height = H): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  for (let i = 0; i < width * height; i++) px.set(colourOf(f), i * 3);
  return sharp(px, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

const ffmpeg = (...args: string[]) => execFileSync("ffmpeg", ["-v", "error", "-y", ...args]);
let mp4: Uint8Array;
let webm: Uint8Array;

beforeAll(async () => {
  for (let f = 0; f < FRAMES; f++) writeFileSync(join(dir, `${f}.png`), await frame(f));
  const frames = ["-framerate", "6", "-i", join(dir, "%d.png")];
  ffmpeg(...frames, "-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0", join(dir, "clip.mp4"));
  ffmpeg(...frames, "-c:v", "libvpx-vp9", "-lossless", "1", join(dir, "clip.webm"));
  mp4 = new Uint8Array(readFileSync(join(dir, "clip.mp4")));
  webm = new Uint8Array(readFileSync(join(dir, "clip.webm")));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("frame sampling", () => {
  it("spreads a cap of frames as np.arange(0, total, total / n).astype(int)", () => {
    expect(sampleFrameIndices(15, 8)).toEqual([0, 1, 3, 5, 7, 9, 11, 13]);
    expect(sampleFrameIndices(100, 8)).toEqual([0, 12, 25, 37, 50, 62, 75, 87]);
    expect(sampleFrameIndices(4, 8)).toEqual([0, 1, 2, 3]);
    expect(sampleFrameIndices(0, 8)).toEqual([]);
  });
});

describe("decoding with ffmpeg", () => {
  for (const kind of ["mp4", "webm"] as const) {
    it(`${kind}: the sampled frames, each the colour it was made with`, async () => {
      const bytes = kind === "mp4" ? mp4 : webm;
      expect(sniffVideoType(bytes)).toBe(kind);
      const probe = await inspectVideo(bytes);
      expect(probe).toMatchObject({ width: W, height: H, frames: FRAMES });
      expect(probe.seconds).toBeCloseTo(2, 1);
      const v = await decodeVideo(bytes, { ...DEFAULT_VIDEO_LIMITS, maxFrames: 8 });
      expect(v.indices).toEqual([0, 1, 3, 4, 6, 7, 9, 10]);
      expect(v.pictures).toHaveLength(8);
      let checked = 0;
      v.pictures.forEach((p, i) => {
        expect([p.width, p.height]).toEqual([W, H]);
        const want = colourOf(v.indices[i]);
        // lossless in YUV: the round trip through it moves a colour by a step or two at most
        for (let px = 0; px < W * H; px += 97)
          for (let c = 0; c < 3; c++) expect(Math.abs(p.data[px * 3 + c] - want[c])).toBeLessThanOrEqual(3);
        checked++;
      });
      expect(checked).toBe(8);
    });
  }

  const refusals: {
    name: string;
    bytes: () => Uint8Array;
    limits?: Partial<typeof DEFAULT_VIDEO_LIMITS>;
    message: RegExp;
  }[] = [
    { name: "a PNG", bytes: () => new Uint8Array(readFileSync(join(dir, "0.png"))), message: /not an MP4 or WebM/ },
    { name: "nothing", bytes: () => new Uint8Array(0), message: /the video is empty/ },
    { name: "too many bytes", bytes: () => mp4, limits: { maxBytes: 100 }, message: /bytes; the limit is 100/ },
    { name: "too long", bytes: () => mp4, limits: { maxSeconds: 1 }, message: /lasts 2\.0 s; the limit is 1 s/ },
    {
      name: "frames too large",
      bytes: () => webm,
      limits: { maxFramePixels: 500 },
      message: /32x24 = 768 pixels; the limit is 500/,
    },
    { name: "truncated", bytes: () => mp4.subarray(0, 300), message: /could not be read/ },
    { name: "too slow to decode", bytes: () => mp4, limits: { timeoutMs: 1 }, message: /took longer than 1 ms/ },
    {
      name: "no video stream (sound only)",
      bytes: () => {
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", join(dir, "sound.mp4"));
        return new Uint8Array(readFileSync(join(dir, "sound.mp4")));
      },
      message: /no frames \(no video stream\)/,
    },
    {
      name: "zero frames",
      bytes: () => {
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=10", "-frames:v", "0", join(dir, "zero.mp4"));
        return new Uint8Array(readFileSync(join(dir, "zero.mp4")));
      },
      message: /no frames/,
    },
  ];
  let refused = 0;
  for (const r of refusals) {
    it(`refuses ${r.name}, saying why`, async () => {
      const limits = { ...DEFAULT_VIDEO_LIMITS, ...r.limits };
      const attempt = decodeVideo(r.bytes(), limits);
      await expect(attempt).rejects.toThrow(InvalidRequestError);
      await expect(attempt).rejects.toThrow(r.message);
      refused++;
    });
  }
  it("refused every bad video", () => expect(refused).toBe(refusals.length));
});

describe("a video for the model", () => {
  const config: LlavaConfig = randomNextWeights(1, "next-video").config;

  it("samples a list of frames to the cap, in order, and lays out one grid per frame", async () => {
    const frames = await Promise.all(Array.from({ length: 12 }, (_, f) => frame(f, 20, 40)));
    const v = await prepareVisual({ video: { frames } }, config, {
      ...DEFAULT_MEDIA_LIMITS,
      video: { ...DEFAULT_VIDEO_LIMITS, maxFrames: 4 },
    });
    expect(v.frameIndices).toEqual([0, 3, 6, 9]);
    expect(v.input.kind).toBe("video");
    expect(v.numVisual).toBe(4 * 4); // 4 frames of 2x2 pooled tokens
    expect(v.placeholder).toBe("<video>");
    // a 20x40 frame: 16x32 after the resize, the centre 16x16 kept
    expect(v.grids.map((g) => [g.firstIndex, g.index, g.source, g.top, g.height])).toEqual([
      [0, 0, "frame", 8 / 32, 0.5],
      [4, 1, "frame", 8 / 32, 0.5],
      [8, 2, "frame", 8 / 32, 0.5],
      [12, 3, "frame", 8 / 32, 0.5],
    ]);
  });

  const bad: { name: string; video: () => Promise<{ data?: Uint8Array; frames?: Uint8Array[] }>; message: RegExp }[] = [
    { name: "no frames", video: async () => ({ frames: [] }), message: /has no frames/ },
    {
      name: "frames of two sizes",
      video: async () => ({ frames: [await frame(0), await frame(1, 24, 24)] }),
      message: /must share one size: frame 1 is 24x24, frame 0 32x24/,
    },
    {
      name: "a frame that is no picture",
      video: async () => ({ frames: [new Uint8Array([1, 2, 3])] }),
      message: /video frame 0: the image is not/,
    },
    { name: "bytes and frames", video: async () => ({ data: mp4, frames: [await frame(0)] }), message: /not both/ },
  ];
  let refused = 0;
  for (const b of bad) {
    it(`refuses ${b.name}`, async () => {
      const attempt = prepareVisual({ video: await b.video() }, config);
      await expect(attempt).rejects.toThrow(InvalidRequestError);
      await expect(attempt).rejects.toThrow(b.message);
      refused++;
    });
  }
  it("refused every bad one", () => expect(refused).toBe(bad.length));

  it("is refused by a model that reads pictures only", async () => {
    const { anyres: _a, video: _v, ...plain } = config;
    await expect(prepareVisual({ video: { data: mp4 } }, plain)).rejects.toThrow(/reads pictures only/);
  });
});
