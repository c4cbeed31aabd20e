/** Reads the GPU service's JSON log lines (pino) out of its captured output. */

export type LogLine = Record<string, unknown>;

/** Every line of `output` that parses as a JSON object. */
export function jsonLines(output: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const raw of output.split("\n")) {
    if (!raw.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(raw));
    } catch {
      // a line cut by the pipe, or not JSON: not a log line
    }
  }
  return lines;
}

/** The "generate" lines of one request id, waiting up to `timeoutMs` for at least one to appear. */
export async function requestLogLines(output: () => string, requestId: string, timeoutMs = 5000): Promise<LogLine[]> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const found = jsonLines(output()).filter((l) => l.msg === "generate" && l.requestId === requestId);
    if (found.length > 0 || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
}
