/**
 * Structured JSON logs (pino), one object per line on stdout. Request lines
 * carry the request id and tenant; image bytes are never logged, and prompt
 * text only when the operator opts in (TWIG_LOG_PROMPTS).
 */
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: "gpu-service" } });
}
