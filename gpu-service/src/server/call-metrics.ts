/**
 * Two interceptors of Generate: the calls in flight (the service drains until none is left) and the
 * failed calls by model and gRPC code (`twig_request_errors_total`). What the engine's events say of a
 * request (tokens, time to first token, queueing) is recorded where they are made, in inference.ts.
 */
import { Code, type Interceptor } from "@connectrpc/connect";
import { generateInterceptor } from "./generate-calls.js";
import { metrics } from "./metrics.js";

/** The Generate calls under way: from the parsed request to the stream's end, its failure or its caller's going. */
export class InFlight {
  count = 0;
  readonly interceptor: Interceptor = generateInterceptor(() => {
    this.count++;
    return {
      end: () => {
        this.count--;
        return undefined;
      },
    };
  });
}

/**
 * Counts each failed Generate call under its model and code; the model label is a served model's name or
 * "unknown" (`isServed`), so that callers cannot mint label values.
 */
export function errorCounts(defaultModel: string, isServed: (name: string) => boolean): Interceptor {
  return generateInterceptor((req) => {
    const name = req.model || defaultModel;
    const model = isServed(name) ? name : "unknown";
    return {
      end: (error) => {
        if (error) metrics.errors.inc({ model, code: Code[error.code] });
        return undefined;
      },
    };
  });
}
