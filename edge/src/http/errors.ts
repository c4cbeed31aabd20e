/**
 * Errors in OpenAI's shape: `{"error": {"message", "type", "code", "param"}}`
 * with the matching HTTP status. Route code throws an ApiError; the app's
 * error handler turns it (and anything unexpected) into such a response.
 *
 * Clients never see internals: a 5xx carries a generic message that ends with
 * the request id, and what went wrong (an ApiError's `detail`, or the thrown
 * error itself) is logged under that id.
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
  /** What went wrong, for the log only (never sent to the client). */
  detail?: string;

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

  /** Attaches a detail for the log. */
  withDetail(detail: string): this {
    this.detail = detail;
    return this;
  }

  get type(): ErrorType {
    return TYPE_OF_STATUS[this.status] ?? "server_error";
  }

  /** The body a client gets: a 5xx's message names the request id under which the details are logged. */
  body(requestId?: string): ErrorBody {
    const message = this.status >= 500 && requestId ? `${this.message} (request id ${requestId})` : this.message;
    return { error: { message, type: this.type, code: this.code, param: this.param } };
  }
}

/** A 400 about one request field. */
export const invalidParam = (param: string, message: string) =>
  new ApiError(400, message, "invalid_request_error", param);

/** Any thrown value as an ApiError; logs 5xx details (and unexpected errors) under the request id. */
export function toApiError(err: unknown, requestId: string): ApiError {
  if (err instanceof ApiError) {
    if (err.status >= 500)
      console.error(
        `request ${requestId}: ${err.status} ${err.code}: ${err.message}${err.detail ? `: ${err.detail}` : ""}`,
      );
    return err;
  }
  console.error(`request ${requestId} failed:`, err);
  return new ApiError(500, "the edge failed to handle the request; retry later", "internal_error");
}

/** The response for any thrown value. */
export function errorResponse(c: Context, err: unknown): Response {
  const requestId = c.get("requestId") ?? "?";
  const e = toApiError(err, requestId);
  for (const [k, v] of Object.entries(e.headers)) c.header(k, v);
  return c.json(e.body(requestId), e.status);
}
