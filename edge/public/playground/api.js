// @ts-check
/**
 * The playground's calls to the edge's public API: the models a key may use,
 * and a streamed chat completion read event by event. Nothing here is private
 * to the page: any client can read the same `twigvlm` fields.
 */

/** An error answer of the API (OpenAI's shape), or a failure to reach it. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the request did not get an answer)
   * @param {string} message
   * @param {string | null} code
   * @param {string | null} retryAfter the Retry-After header, seconds
   */
  constructor(status, message, code = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** @param {Response} res */
async function errorOf(res) {
  const text = await res.text();
  let message = text || res.statusText;
  let code = null;
  try {
    const body = JSON.parse(text);
    message = body.error?.message ?? message;
    code = body.error?.code ?? null;
  } catch {}
  return new ApiError(res.status, message, code, res.headers.get("retry-after"));
}

/**
 * GET with the key; the parsed JSON body, or an ApiError.
 * @param {string} path
 * @param {string} key
 */
export async function getJson(path, key) {
  const res = await fetch(path, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

/**
 * @typedef {{first_index: number, rows: number, cols: number, row_stride?: number, source?: string, index?: number, left: number, top: number, width: number, height: number}} VisualGrid
 * @typedef {{mode: string, visual_tokens: number, kept_visual_indices: number[], visual_grids: VisualGrid[]}} Started
 * @typedef {{text: string, tokens: number, draftTokens: number}} Piece
 * @typedef {{
 *   onStarted(started: Started): void,
 *   onPiece(piece: Piece): void,
 *   onFinished(stats: Record<string, any>): void,
 * }} StreamHandlers
 */

/**
 * POST /v1/chat/completions with stream: true, calling the handlers as the
 * events arrive: the first chunk's `twigvlm` (what was kept), each content
 * chunk, and the final chunk's statistics. Rejects with an ApiError for an
 * error answer, an error event mid-stream, or a stream cut short.
 * @param {string} key
 * @param {Record<string, unknown>} body
 * @param {StreamHandlers} on
 */
export async function streamChat(key, body, on) {
  let res;
  try {
    res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
    });
  } catch (err) {
    throw new ApiError(0, `the edge could not be reached: ${/** @type {Error} */ (err).message}`);
  }
  if (!res.ok || !res.body) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  let done = false;
  while (!done) {
    const r = await reader.read();
    if (r.done) break;
    pending += r.value;
    for (let end = pending.indexOf("\n\n"); end >= 0; end = pending.indexOf("\n\n")) {
      const event = pending.slice(0, end);
      pending = pending.slice(end + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice("data: ".length);
      if (data === "[DONE]") {
        done = true;
        break;
      }
      handle(JSON.parse(data), on);
    }
  }
  if (!done) throw new ApiError(0, "the stream ended before it was complete");
}

/**
 * @param {any} chunk
 * @param {StreamHandlers} on
 */
function handle(chunk, on) {
  if (chunk.error) throw new ApiError(200, chunk.error.message, chunk.error.code);
  const choice = chunk.choices?.[0];
  const twig = chunk.twigvlm;
  if (choice?.delta?.role && twig) on.onStarted(twig);
  else if (choice?.finish_reason && twig) on.onFinished(twig);
  else if (choice?.delta && twig && "tokens" in twig)
    on.onPiece({ text: choice.delta.content ?? "", tokens: twig.tokens, draftTokens: twig.accepted_draft_tokens });
}

/**
 * What a failed request should tell the person at the page.
 * @param {unknown} err
 */
export function describeError(err) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${String(err)}`;
  // a bad video is a 400 whose code says which
  const video = { invalid_video: "That video cannot be read", video_too_large: "The video is too large" };
  const what =
    video[/** @type {keyof typeof video} */ (err.code ?? "")] ??
    {
      401: "The API key was refused",
      403: "This key may not use that model",
      413: "The picture is too large",
      415: "That file is not a picture the service reads",
      429: "Rate limit reached",
    }[err.status];
  const head = what ?? (err.status ? `Error ${err.status}` : "Error");
  const wait = err.status === 429 && err.retryAfter ? ` Try again in ${err.retryAfter} s.` : "";
  const text = /[.!?]$/.test(err.message) ? err.message : `${err.message}.`;
  return `${head} (${err.status || "no answer"}${err.code ? ` ${err.code}` : ""}): ${text}${wait}`;
}
