/**
 * The edge's numeric settings, each a Worker variable with a default that runs
 * locally. A variable that is set but is not a whole number in its range is a
 * configuration problem (reported by checkConfig), never silently replaced.
 */
import type { Env } from "../env.js";

const MiB = 1024 * 1024;

interface Setting {
  /** The Worker variable. */
  name: keyof Env & string;
  fallback: (s: Partial<Settings>) => number;
  min: number;
  max: number;
}

export interface Settings {
  /** Largest image (uploads and data: URLs), in bytes. */
  maxImageBytes: number;
  /** Largest video (a data: URL in a video_url part), in bytes. */
  maxVideoBytes: number;
  /** Most frames in a `video` part's list of pictures. */
  maxVideoFrames: number;
  /** Largest JSON request body, in bytes (room for a base64 image and the text). */
  maxRequestBytes: number;
  /** Whole budget of one GPU call, failover included; the rest goes to the shard as its deadline. */
  gpuDeadlineMs: number;
  /** Longest wait for a shard's connection and first byte (its Started event) before the next shard is tried. */
  gpuConnectTimeoutMs: number;
  /** Longest silence between two events of a running generation before it is ended as stalled. */
  gpuStallTimeoutMs: number;
  /** How long a failed GPU shard is left alone before one trial request goes to it. */
  shardCooldownMs: number;
  /** The longest cool-down, which repeated failed trials double up to. */
  shardMaxCooldownMs: number;
  /** How long an isolate keeps the shard lists it read from D1 (the admin API's routes) before reading again. */
  routesCacheMs: number;
  /** A tenant's uploads may hold at most this many bytes, unless the tenant has its own quota. */
  storageQuotaBytes: number;
  /** ... and at most this many files. */
  storageQuotaFiles: number;
  /** Uploads older than this are refused and removed. */
  fileTtlSeconds: number;
}

const TABLE: Record<keyof Settings, Setting> = {
  maxImageBytes: { name: "MAX_IMAGE_BYTES", fallback: () => 10 * MiB, min: 1, max: 100 * MiB },
  maxVideoBytes: { name: "MAX_VIDEO_BYTES", fallback: () => 10 * MiB, min: 1, max: 100 * MiB },
  maxVideoFrames: { name: "MAX_VIDEO_FRAMES", fallback: () => 64, min: 1, max: 1024 },
  maxRequestBytes: {
    name: "MAX_REQUEST_BYTES",
    // a base64 data: URL of the largest image or video, plus 1 MiB of text
    fallback: (s) => Math.ceil(Math.max(s.maxImageBytes ?? 10 * MiB, s.maxVideoBytes ?? 10 * MiB) / 3) * 4 + MiB,
    min: 1024,
    max: 200 * MiB,
  },
  gpuDeadlineMs: { name: "GPU_DEADLINE_MS", fallback: () => 300_000, min: 100, max: 3_600_000 },
  gpuConnectTimeoutMs: { name: "GPU_CONNECT_TIMEOUT_MS", fallback: () => 30_000, min: 50, max: 600_000 },
  gpuStallTimeoutMs: { name: "GPU_STALL_TIMEOUT_MS", fallback: () => 30_000, min: 50, max: 600_000 },
  shardCooldownMs: { name: "SHARD_COOLDOWN_MS", fallback: () => 10_000, min: 100, max: 3_600_000 },
  shardMaxCooldownMs: {
    name: "SHARD_MAX_COOLDOWN_MS",
    fallback: (s) => Math.max(60_000, s.shardCooldownMs ?? 0),
    min: 100,
    max: 3_600_000,
  },
  routesCacheMs: { name: "ROUTES_CACHE_MS", fallback: () => 5_000, min: 0, max: 3_600_000 },
  storageQuotaBytes: { name: "STORAGE_QUOTA_BYTES", fallback: () => 100 * MiB, min: 1, max: 2 ** 50 },
  storageQuotaFiles: { name: "STORAGE_QUOTA_FILES", fallback: () => 100, min: 1, max: 1_000_000 },
  fileTtlSeconds: { name: "FILE_TTL_SECONDS", fallback: () => 7 * 24 * 3600, min: 1, max: 10 * 365 * 24 * 3600 },
};

/** The settings from `env`, and a line for each variable that is set but malformed (its default is used). */
export function readSettings(env: Env): { settings: Settings; problems: string[] } {
  const settings: Partial<Settings> = {};
  const problems: string[] = [];
  for (const [key, s] of Object.entries(TABLE) as [keyof Settings, Setting][]) {
    const raw = env[s.name];
    const n = typeof raw === "string" && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
    if (raw === undefined || raw === "") settings[key] = s.fallback(settings);
    else if (Number.isSafeInteger(n) && n >= s.min && n <= s.max) settings[key] = n;
    else {
      problems.push(`${s.name} must be a whole number from ${s.min} to ${s.max}; got ${JSON.stringify(raw)}`);
      settings[key] = s.fallback(settings);
    }
  }
  return { settings: settings as Settings, problems };
}

/** The settings of `env` (defaults in place of malformed values; checkConfig refuses those). */
export const settingsOf = (env: Env): Settings => readSettings(env).settings;
