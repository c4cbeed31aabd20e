/**
 * OpenAI's rate-limit headers for an admission, and the 429 that refuses one:
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens}, resets written as
 * durations ("1s", "6m0s", "250ms"), Retry-After in whole seconds.
 */
import { ApiError } from "../http/errors.js";
import type { Admission } from "./limiter.js";

/** A duration the way OpenAI writes it: "250ms", "12s", "1m30s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const s = Math.ceil(ms / 100) / 10;
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round((s - m * 60) * 10) / 10}s`;
}

export function rateLimitHeaders(a: Admission): Record<string, string> {
  return {
    "x-ratelimit-limit-requests": String(a.requests.limit),
    "x-ratelimit-remaining-requests": String(a.requests.remaining),
    "x-ratelimit-reset-requests": formatDuration(a.requests.resetMs),
    "x-ratelimit-limit-tokens": String(a.tokens.limit),
    "x-ratelimit-remaining-tokens": String(a.tokens.remaining),
    "x-ratelimit-reset-tokens": formatDuration(a.tokens.resetMs),
  };
}

const MESSAGES = {
  requests: (a: Admission) => `rate limit reached: ${a.requests.limit} requests per minute`,
  tokens: (a: Admission) =>
    `rate limit reached: ${a.tokens.limit} tokens per minute (prompt tokens plus max_tokens are reserved up front)`,
  request_too_large: (a: Admission) =>
    `request too large: its prompt tokens plus max_tokens exceed the limit of ${a.tokens.limit} tokens per minute; lower max_tokens`,
  concurrency: (a: Admission) => `too many concurrent requests: the limit is ${a.concurrency.limit}`,
};

/** The 429 for a refused admission. */
export function rateLimitError(a: Admission): ApiError {
  const by = a.refusedBy ?? "requests";
  return new ApiError(
    429,
    MESSAGES[by](a),
    by === "concurrency" ? "concurrency_limit_exceeded" : "rate_limit_exceeded",
    null,
    {
      ...rateLimitHeaders(a),
      "retry-after": String(Math.max(1, Math.ceil(a.retryAfterMs / 1000))),
    },
  );
}
