/**
 * A streaming chat-completions client for load and fault tests: one POST to
 * the edge with `stream: true`, read as Server-Sent Events, with the moment
 * (performance.now()) of each step: sent, answered, each content chunk, the
 * terminal error event or `[DONE]`, the end of the body. Nothing is parsed
 * beyond what the checks need, and nothing throws: a refused or broken request
 * is a result too.
 */

export interface ChatStreamResult {
  status: number;
  headers: Headers;
  /** The error body of a non-200 answer. */
  errorBody?: { error?: { message?: string; code?: string } };
  text: string;
  /** performance.now() when sent, when the answer's headers arrived, at each content chunk, at the end. */
  sentAt: number;
  answeredAt: number;
  chunkAt: number[];
  endAt: number;
  /** `data: [DONE]` arrived (a complete stream). */
  done: boolean;
  /** A `data: {"error": ...}` event, and when it arrived. */
  error?: { message?: string; code?: string };
  errorAt?: number;
  completionTokens?: number;
  /** The fetch itself failed (connection refused or reset before an answer). */
  failure?: string;
}

export interface ChatStreamOptions {
  requestId?: string;
  signal?: AbortSignal;
  /** Called when the answer's status arrives (before the body). */
  onAnswer?: (status: number) => void;
  /** Called at each content chunk, as it arrives. */
  onChunk?: (text: string) => void;
}

/** Streams one chat completion from `edgeUrl` with API key `key`; `body` is the request without `stream`. */
export async function streamChat(
  edgeUrl: string,
  key: string,
  body: Record<string, unknown>,
  opts: ChatStreamOptions = {},
): Promise<ChatStreamResult> {
  const r: ChatStreamResult = {
    status: 0,
    headers: new Headers(),
    text: "",
    sentAt: performance.now(),
    answeredAt: 0,
    chunkAt: [],
    endAt: 0,
    done: false,
  };
  try {
    const res = await fetch(`${edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        ...(opts.requestId ? { "x-request-id": opts.requestId } : {}),
      },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal: opts.signal,
    });
    r.answeredAt = performance.now();
    r.status = res.status;
    r.headers = res.headers;
    opts.onAnswer?.(res.status);
    if (res.status !== 200 || !res.body) {
      const text = await res.text().catch(() => "");
      try {
        r.errorBody = JSON.parse(text);
      } catch {
        r.errorBody = { error: { message: text.slice(0, 300) } };
      }
      r.endAt = performance.now();
      return r;
    }
    const decoder = new TextDecoder();
    let pending = "";
    const reader = res.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      const at = performance.now();
      pending += decoder.decode(value, { stream: true });
      for (let end = pending.indexOf("\n\n"); end >= 0; end = pending.indexOf("\n\n")) {
        const event = pending.slice(0, end);
        pending = pending.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice("data: ".length);
        if (data === "[DONE]") {
          r.done = true;
          continue;
        }
        const parsed = JSON.parse(data);
        if (parsed.error) {
          r.error = parsed.error;
          r.errorAt = at;
          continue;
        }
        const content = parsed.choices?.[0]?.delta?.content;
        if (content) {
          r.text += content;
          r.chunkAt.push(at);
          opts.onChunk?.(content);
        }
        if (parsed.usage) r.completionTokens = parsed.usage.completion_tokens;
      }
    }
  } catch (err) {
    r.failure = (err as Error).message;
  }
  r.endAt = performance.now();
  return r;
}

/** The q-quantile of `xs` (nearest rank), NaN when empty. */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
