/**
 * One log line per Generate call, written when the call ends (finished,
 * failed, or abandoned by its caller): request id, tenant, model, mode, gRPC
 * code, token counts and timings. The prompt goes in only when `logPrompts`
 * is set; the image never does. An internal error's details go into the line,
 * and the caller gets a generic message with the request id.
 */
import { randomUUID } from "node:crypto";
import { Code, type Interceptor } from "@connectrpc/connect";
import { FinishReason, type GenerateRequest, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { generateInterceptor } from "./generate-calls.js";
import type { Logger } from "./log.js";
import { callerError, errorDetails } from "./request-errors.js";

export interface RequestLogOptions {
  logger: Logger;
  logPrompts: boolean;
  defaultModel: string;
}

function promptText(req: GenerateRequest): string | undefined {
  if (req.input.case === "prompt") return req.input.value;
  if (req.input.case === "conversation")
    return req.input.value.messages.map((m) => `${m.role}: ${m.content}`).join("\n");
  return undefined;
}

/** The interceptor that leaves one log line per Generate call; it fills in a request id when the caller sent none. */
export function requestLog(opts: RequestLogOptions): Interceptor {
  return generateInterceptor((req) => {
    req.requestId ||= randomUUID();
    const t0 = performance.now();
    const line: Record<string, unknown> = {
      requestId: req.requestId,
      tenant: req.tenantId || "anonymous",
      model: req.model || opts.defaultModel,
      mode: Mode[req.acceleration?.mode ?? 0] ?? req.acceleration?.mode,
      imageBytes: req.image?.source.case === "data" ? req.image.source.value.length : 0,
      maxTokens: req.sampling?.maxTokens ?? 0,
    };
    if (opts.logPrompts) line.prompt = promptText(req);
    return {
      event(ev) {
        if (ev.event.case === "started") {
          line.promptTokens = ev.event.value.promptTokens;
          line.visualTokensKept = ev.event.value.keptVisualIndices.length;
        } else if (ev.event.case === "finished") {
          const f = ev.event.value;
          line.completionTokens = f.usage?.completionTokens;
          line.finishReason = FinishReason[f.finishReason];
          line.queueMs = Math.round(f.stats?.queueMs ?? 0);
          line.timeToFirstTokenMs = Math.round(f.stats?.timeToFirstTokenMs ?? 0);
        }
      },
      end(error) {
        const code = error?.code;
        line.code = code === undefined ? "OK" : Code[code];
        line.durationMs = Math.round(performance.now() - t0);
        if (error) line.error = errorDetails(error);
        const level = code === undefined || code === Code.Canceled ? "info" : code === Code.Internal ? "error" : "warn";
        opts.logger[level](line, "generate");
        // INTERNAL: the details stay in this line; the caller learns its request id
        return error && callerError(error, req.requestId);
      },
    };
  });
}
