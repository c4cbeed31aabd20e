/**
 * Errors in OpenAI's shape: `{"error": {"message", "type", "code", "param"}}`
 * with the matching HTTP status. Route code throws an ApiError; the app's
 * error handler turns it (and anything unexpected) into such a response.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "service_unavailable_error"
  | "server_error";

export interface ErrorBody {
  error: { message: string; type: ErrorType; code: string | null; param: string | null };
}

const TYPE_OF_STATUS: Record<number, ErrorType> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  411: "invalid_request_error",
  413: "invalid_request_error",
  415: "invalid_request_error",
  429: "rate_limit_error",
  503: "service_unavailable_error",
};

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  get type(): ErrorType {
    return TYPE_OF_STATUS[this.status] ?? "server_error";
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

/** A 400 about one request field. */
export const invalidParam = (param: string, message: string) =>
  new ApiError(400, message, "invalid_request_error", param);

/** The response for any thrown value; unexpected errors become a 500 without internals. */
export function errorResponse(c: Context, err: unknown): Response {
  const e =
    err instanceof ApiError
      ? err
      : new ApiError(500, "the edge failed to handle the request; retry later", "internal_error");
  if (!(err instanceof ApiError)) console.error(`request ${c.get("requestId") ?? "?"} failed:`, err);
  for (const [k, v] of Object.entries(e.headers)) c.header(k, v);
  return c.json(e.body(), e.status);
}
