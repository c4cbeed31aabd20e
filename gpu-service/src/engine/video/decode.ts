/**
 * Decoding a short video with Debian's ffmpeg, bounded in every direction: the bytes are checked first
 * (MP4 or WebM by their magic bytes, a size limit), written to a private temporary file (an MP4 may keep
 * its index at the end, which a pipe cannot seek to), probed with ffprobe (duration, frame count and
 * size, each against its limit), and only then are the sampled frames decoded, as raw RGB, by ffmpeg.
 * Both run without a shell, with a timeout, and their output is capped at what the probe announced.
 * Frames are decoded as stored (no automatic rotation), as PyAV or decord hand them to a processor.
 *
 * Every refusal is an InvalidRequestError whose message names the bound.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidRequestError } from "../errors.js";
import type { RgbPicture } from "../pad-resize.js";
import { sampleFrameIndices } from "./frames.js";

export interface VideoLimits {
  /** Largest encoded video accepted, in bytes. */
  maxBytes: number;
  /** Longest duration accepted, in seconds. */
  maxSeconds: number;
  /** The most frames a video (or a list of frames) is sampled to. */
  maxFrames: number;
  /** Largest width * height of a frame. */
  maxFramePixels: number;
  /** How long ffprobe and ffmpeg may each run. */
  timeoutMs: number;
}

export const DEFAULT_VIDEO_LIMITS: VideoLimits = {
  maxBytes: 20 * 1024 * 1024,
  maxSeconds: 60,
  maxFrames: 8,
  maxFramePixels: 4096 * 2160,
  timeoutMs: 20_000,
};

export type VideoType = "mp4" | "webm";

const ascii = (bytes: Uint8Array, from: number, to: number) => String.fromCharCode(...bytes.subarray(from, to));

/** MP4 (an ISO BMFF `ftyp` box first) or WebM (an EBML header whose doctype is webm), by the first bytes. */
export function sniffVideoType(bytes: Uint8Array): VideoType | undefined {
  if (bytes.length >= 12 && ascii(bytes, 4, 8) === "ftyp") return "mp4";
  if (
    bytes.length >= 4 &&
    bytes[0] === 0x1a &&
    bytes[1] === 0x45 &&
    bytes[2] === 0xdf &&
    bytes[3] === 0xa3 &&
    ascii(bytes, 4, Math.min(bytes.length, 64)).includes("webm")
  )
    return "webm";
  return undefined;
}

/** Checks what can be checked without decoding: emptiness, size and type. */
export function checkVideoBytes(bytes: Uint8Array, limits: VideoLimits): VideoType {
  if (bytes.length === 0) throw new InvalidRequestError("the video is empty");
  if (bytes.length > limits.maxBytes)
    throw new InvalidRequestError(`the video is ${bytes.length} bytes; the limit is ${limits.maxBytes}`);
  const type = sniffVideoType(bytes);
  if (!type) throw new InvalidRequestError("the video is not an MP4 or WebM file");
  return type;
}

interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program (no shell) with a timeout; stdout beyond `maxStdout` bytes kills it. */
function run(program: string, args: string[], timeoutMs: number, maxStdout: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: timeoutMs,
      killSignal: "SIGKILL",
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = "";
    let overflow = false;
    child.stdout.on("data", (b: Buffer) => {
      size += b.length;
      if (size > maxStdout) {
        overflow = true;
        child.kill("SIGKILL");
      } else chunks.push(b);
    });
    child.stderr.on("data", (b: Buffer) => {
      if (stderr.length < 4096) stderr += b.toString("utf8");
    });
    child.on("error", (err) => reject(new Error(`${program} could not run: ${err.message}`)));
    child.on("close", (code, signal) => {
      if (overflow) reject(new InvalidRequestError(`the video decodes to more than the ${maxStdout} bytes announced`));
      else if (signal === "SIGKILL" && code === null)
        reject(new InvalidRequestError(`decoding the video took longer than ${timeoutMs} ms`));
      else resolve({ code, stdout: Buffer.concat(chunks), stderr });
    });
  });
}

export interface VideoProbe {
  width: number;
  height: number;
  /** Frames of the first video stream (its packets, counted by demuxing). */
  frames: number;
  seconds: number;
}

/** The first video stream's size, frame count and the duration, from ffprobe; refused beyond the limits. */
async function probe(file: string, limits: VideoLimits): Promise<VideoProbe> {
  const r = await run(
    "ffprobe",
    [
      "-v",
      "error",
      "-select_streams",
      "v:0",
      "-count_packets",
      "-show_entries",
      "stream=width,height,nb_read_packets,duration:format=duration",
      "-of",
      "json",
      file,
    ],
    limits.timeoutMs,
    1 << 20,
  );
  // biome-ignore lint/suspicious/noExplicitAny: ffprobe's JSON
  let info: any;
  try {
    info = JSON.parse(r.stdout.toString("utf8"));
  } catch {
    info = undefined;
  }
  if (r.code !== 0 || !info) throw new InvalidRequestError(`the video could not be read: ${firstLine(r.stderr)}`);
  const stream = info.streams?.[0];
  if (!stream) throw new InvalidRequestError("the video has no frames (no video stream)");
  const width = Number(stream.width);
  const height = Number(stream.height);
  const frames = Number(stream.nb_read_packets ?? 0);
  const seconds = Number(info.format?.duration ?? stream.duration ?? Number.NaN);
  if (!(frames > 0)) throw new InvalidRequestError("the video has no frames");
  if (!(width > 0 && height > 0)) throw new InvalidRequestError("the video's frames have no width or height");
  if (width * height > limits.maxFramePixels)
    throw new InvalidRequestError(
      `the video's frames are ${width}x${height} = ${width * height} pixels; the limit is ${limits.maxFramePixels}`,
    );
  if (!Number.isFinite(seconds)) throw new InvalidRequestError("the video's duration could not be read");
  if (seconds > limits.maxSeconds)
    throw new InvalidRequestError(`the video lasts ${seconds.toFixed(1)} s; the limit is ${limits.maxSeconds} s`);
  return { width, height, frames, seconds };
}

const firstLine = (s: string) => s.trim().split("\n")[0]?.slice(0, 200) || "ffmpeg gave no reason";

export interface DecodedVideo extends VideoProbe {
  /** The sampled frames' indices in the clip, and their RGB pixels. */
  indices: number[];
  pictures: RgbPicture[];
}

/** Bytes of an MP4 or WebM → up to `limits.maxFrames` frames sampled uniformly, as RGB pictures. */
export function decodeVideo(bytes: Uint8Array, limits: VideoLimits = DEFAULT_VIDEO_LIMITS): Promise<DecodedVideo> {
  return withClipFile(bytes, limits, async (file) => {
    const p = await probe(file, limits);
    const indices = sampleFrameIndices(p.frames, limits.maxFrames);
    const frameBytes = p.width * p.height * 3;
    const select = indices.map((i) => `eq(n\\,${i})`).join("+");
    const r = await run(
      "ffmpeg",
      [
        ...["-v", "error", "-nostdin", "-noautorotate", "-i", file, "-an", "-sn", "-dn"],
        ...["-vf", `select='${select}'`, "-fps_mode", "passthrough", "-frames:v", String(indices.length)],
        ...["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
      ],
      limits.timeoutMs,
      indices.length * frameBytes,
    );
    const decoded = Math.floor(r.stdout.length / frameBytes);
    if (r.code !== 0 && decoded === 0)
      throw new InvalidRequestError(`the video could not be decoded: ${firstLine(r.stderr)}`);
    if (decoded === 0) throw new InvalidRequestError("the video has no frames that decode");
    const pictures = Array.from({ length: decoded }, (_, i) => ({
      data: new Uint8Array(r.stdout.buffer, r.stdout.byteOffset + i * frameBytes, frameBytes),
      width: p.width,
      height: p.height,
    }));
    return { ...p, indices: indices.slice(0, decoded), pictures };
  });
}

/** Checks a video before it queues: its bytes, then what ffprobe says of it (no frame is decoded). */
export function inspectVideo(bytes: Uint8Array, limits: VideoLimits = DEFAULT_VIDEO_LIMITS): Promise<VideoProbe> {
  return withClipFile(bytes, limits, (file) => probe(file, limits));
}

/** Checks the bytes, writes them to a private temporary file for `use`, and removes it after. */
async function withClipFile<T>(bytes: Uint8Array, limits: VideoLimits, use: (file: string) => Promise<T>): Promise<T> {
  const type = checkVideoBytes(bytes, limits);
  const dir = await mkdtemp(join(tmpdir(), "twig-video-"));
  try {
    const file = join(dir, `clip.${type}`);
    await writeFile(file, bytes, { mode: 0o600 });
    return await use(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
