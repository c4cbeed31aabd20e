/**
 * Service configuration, read once from environment variables.
 * Every variable is listed, with its default, in the README.
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { resolve } from "node:path";
import type { ImageLimits } from "../engine/image-format.js";
import {
  ATTENTION_CHOICES,
  type AttentionChoice,
  EXECUTION_PROVIDERS,
  type ExecutionProvider,
  PRECISIONS,
  PREFILL_ROWS_PER_ROUND,
  type Precision,
} from "../engine/options.js";
import type { VideoLimits } from "../engine/video/decode.js";
import type { FaultMarkers } from "../engine/worker-host.js";

export interface ServiceConfig {
  /** Interface to listen on (gRPC, gRPC-Web and Connect share one port). */
  host: string;
  port: number;
  /** Directory holding one sub-directory per model (each with config.json). */
  modelsDir: string;
  /** Model served when a request names none. */
  defaultModel: string;
  /** Engine workers (threads, each with its own copy of the model) per model. */
  workersPerModel: number;
  /** ONNX Runtime intra-op threads per worker; 0 lets it choose. */
  engineThreads: number;
  /** Requests each worker decodes together (continuous batching); 1: one at a time. */
  maxBatch: number;
  /** The old generation each engine worker's JS heap starts with, in MB (0: V8's own; worker-host.ts, `setEngineHeapStart`). */
  engineHeapMb: number;
  /** KV memory each worker's batch may hold, in bytes (undefined: the engine's default). */
  kvBudgetBytes?: number;
  /** Prompt rows each worker's batch prefills between two decoding rounds (a longer prompt in chunks). */
  prefillRowsPerRound: number;
  /** ONNX Runtime execution provider: cpu (default) or cuda (GPU hosts). */
  provider: ExecutionProvider;
  /** Decoder weight precision: fp32, fp16 or int4 (MatMulNBits). */
  precision: Precision;
  /** Decoder attention: auto (direct for wide models, contrib for small ones), contrib, direct or plain. */
  attention: AttentionChoice;
  /** Where decoder graphs too large for one protobuf message are cached as external data. */
  graphCacheDir?: string;
  /** Requests that may wait per model before RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** On SIGTERM, how long in-flight streams may run before the process exits. */
  drainGraceMs: number;
  /** Interface and port of the Prometheus /metrics endpoint (loopback unless configured). */
  metricsHost: string;
  metricsPort: number;
  /** When set, callers of the inference service must present it as a bearer token. */
  serviceToken?: string;
  /** PEM certificate chain and private key: when both are set the port speaks TLS (h2 and HTTP/1.1 by ALPN). */
  tls?: { cert: string; key: string };
  /** Largest image accepted: encoded bytes, pixels (width * height), longest side, aspect ratio. */
  image: ImageLimits;
  /** Videos: encoded bytes, duration, frames sampled, a frame's pixels, how long ffmpeg may take. */
  video: VideoLimits;
  /** A connection with no request in progress for this long is closed (ms), one that never sends a byte too. */
  idleTimeoutMs: number;
  /** Health.Watch streams open at once; past it, RESOURCE_EXHAUSTED. */
  maxHealthWatches: number;
  /** Test-only: prompts with these markers make an engine worker exit or fail (TWIG_ALLOW_FAULT_INJECTION=1 only). */
  faults?: FaultMarkers;
  /** pino level of the JSON logs. */
  logLevel: string;
  /** Opt-in: request log lines carry the prompt text (never the image). */
  logPrompts: boolean;
}

/** A positive number (fractions allowed), or the fallback when unset. */
function numberFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return value;
}

function intFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  }
  return value;
}

/** Reads the certificate and key files named by TWIG_TLS_CERT and TWIG_TLS_KEY (both or neither). */
function tlsFromEnv(env: NodeJS.ProcessEnv): ServiceConfig["tls"] {
  const certFile = env.TWIG_TLS_CERT || undefined;
  const keyFile = env.TWIG_TLS_KEY || undefined;
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) throw new Error("TWIG_TLS_CERT and TWIG_TLS_KEY must be set together");
  return { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function logLevel(raw: string): string {
  if (!LOG_LEVELS.includes(raw))
    throw new Error(`TWIG_LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${raw}"`);
  return raw;
}

function choiceFromEnv<T extends string>(env: NodeJS.ProcessEnv, name: string, choices: readonly T[]): T {
  const raw = env[name] || choices[0];
  if (!choices.includes(raw as T)) throw new Error(`${name} must be one of ${choices.join(", ")}, got "${raw}"`);
  return raw as T;
}

/** The fault injection markers, refused unless TWIG_ALLOW_FAULT_INJECTION=1 says this is a test. */
function faultsFromEnv(env: NodeJS.ProcessEnv): FaultMarkers | undefined {
  const exitMarker = env.TWIG_FAULT_EXIT_MARKER || undefined;
  const errorMarker = env.TWIG_FAULT_ERROR_MARKER || undefined;
  if (!exitMarker && !errorMarker) return undefined;
  if (env.TWIG_ALLOW_FAULT_INJECTION !== "1")
    throw new Error(
      "TWIG_FAULT_EXIT_MARKER and TWIG_FAULT_ERROR_MARKER break engine workers on purpose, for tests: they need TWIG_ALLOW_FAULT_INJECTION=1",
    );
  return { exitMarker, errorMarker };
}

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost): only this machine can connect. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h === "::1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith("127.");
}

/**
 * Listening beyond this machine without a service token lets anyone on the
 * network use the models: refused, unless TWIG_ALLOW_UNAUTHENTICATED=1 says the
 * network is trusted.
 */
function checkExposure(host: string, token: string | undefined, env: NodeJS.ProcessEnv): void {
  if (token || isLoopback(host) || env.TWIG_ALLOW_UNAUTHENTICATED === "1") return;
  throw new Error(
    `TWIG_GPU_HOST=${host} is not a loopback address and TWIG_SERVICE_TOKEN is not set: anyone who can reach it could use the models. Set TWIG_SERVICE_TOKEN (the edge's GPU_SERVICE_TOKEN), listen on 127.0.0.1, or set TWIG_ALLOW_UNAUTHENTICATED=1 on a trusted network`,
  );
}

/** TWIG_ENGINE_HEAP_MB unless set: room for a worker's garbage between full collections (README, "Continuous batching"). */
export const DEFAULT_ENGINE_HEAP_MB = 128;

/** TWIG_MAX_BATCH unless set: a server for many decodes requests together (README, "Continuous batching"). */
export const DEFAULT_MAX_BATCH = 16;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  const host = env.TWIG_GPU_HOST || "127.0.0.1";
  const serviceToken = env.TWIG_SERVICE_TOKEN || undefined;
  checkExposure(host, serviceToken, env);
  return {
    host,
    port: intFromEnv(env, "TWIG_GPU_PORT", 50651),
    modelsDir: resolve(env.TWIG_MODELS_DIR || new URL("../../../models", import.meta.url).pathname),
    defaultModel: env.TWIG_DEFAULT_MODEL || "demo",
    workersPerModel: Math.max(1, intFromEnv(env, "TWIG_ENGINE_WORKERS", 1)),
    engineThreads: intFromEnv(env, "TWIG_ENGINE_THREADS", 0),
    maxBatch: Math.max(1, intFromEnv(env, "TWIG_MAX_BATCH", DEFAULT_MAX_BATCH)),
    engineHeapMb: intFromEnv(env, "TWIG_ENGINE_HEAP_MB", DEFAULT_ENGINE_HEAP_MB),
    kvBudgetBytes: env.TWIG_KV_BUDGET_BYTES ? intFromEnv(env, "TWIG_KV_BUDGET_BYTES", 0) : undefined,
    prefillRowsPerRound: Math.max(1, intFromEnv(env, "TWIG_PREFILL_ROWS", PREFILL_ROWS_PER_ROUND)),
    provider: choiceFromEnv(env, "TWIG_EXECUTION_PROVIDER", EXECUTION_PROVIDERS),
    precision: choiceFromEnv(env, "TWIG_PRECISION", PRECISIONS),
    attention: choiceFromEnv(env, "TWIG_ATTENTION", ATTENTION_CHOICES),
    graphCacheDir: env.TWIG_GRAPH_CACHE_DIR || undefined,
    maxQueue: intFromEnv(env, "TWIG_MAX_QUEUE", 32),
    drainGraceMs: intFromEnv(env, "TWIG_DRAIN_GRACE_MS", 30_000),
    serviceToken,
    metricsHost: env.TWIG_METRICS_HOST || "127.0.0.1",
    metricsPort: intFromEnv(env, "TWIG_METRICS_PORT", 9464),
    tls: tlsFromEnv(env),
    image: {
      maxBytes: intFromEnv(env, "TWIG_MAX_IMAGE_BYTES", 20 * 1024 * 1024),
      maxPixels: intFromEnv(env, "TWIG_MAX_IMAGE_PIXELS", 40_000_000),
      maxSide: intFromEnv(env, "TWIG_MAX_IMAGE_SIDE", 8192),
      maxAspectRatio: numberFromEnv(env, "TWIG_MAX_IMAGE_ASPECT", 20),
    },
    video: {
      maxBytes: intFromEnv(env, "TWIG_MAX_VIDEO_BYTES", 20 * 1024 * 1024),
      maxSeconds: numberFromEnv(env, "TWIG_MAX_VIDEO_SECONDS", 60),
      maxFrames: Math.max(1, intFromEnv(env, "TWIG_MAX_VIDEO_FRAMES", 8)),
      maxFramePixels: intFromEnv(env, "TWIG_MAX_VIDEO_FRAME_PIXELS", 4096 * 2160),
      timeoutMs: Math.max(1, intFromEnv(env, "TWIG_VIDEO_DECODE_TIMEOUT_MS", 20_000)),
    },
    idleTimeoutMs: Math.max(1, intFromEnv(env, "TWIG_IDLE_TIMEOUT_MS", 60_000)),
    maxHealthWatches: intFromEnv(env, "TWIG_MAX_HEALTH_WATCHES", 100),
    faults: faultsFromEnv(env),
    logLevel: logLevel(env.TWIG_LOG_LEVEL || "info"),
    logPrompts: env.TWIG_LOG_PROMPTS === "1" || env.TWIG_LOG_PROMPTS === "true",
  };
}
