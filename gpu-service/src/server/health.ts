/**
 * grpc.health.v1.Health: "" is the whole service; each served model and
 * "twigvlm.v1.InferenceService" are registered names. Watch streams changes.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "@twigserve/proto/grpc/health/v1/health_pb.js";

export { Status as ServingStatus };

export class HealthState {
  private readonly statuses = new Map<string, Status>();
  private readonly listeners = new Set<() => void>();

  set(service: string, status: Status): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const listener of this.listeners) listener();
  }

  get(service: string): Status | undefined {
    return this.statuses.get(service);
  }

  all(): Map<string, Status> {
    return new Map(this.statuses);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** Health over `state`; at most `maxWatches` Watch streams are open at once (RESOURCE_EXHAUSTED past it). */
export function healthService(state: HealthState, maxWatches: number): ServiceImpl<typeof Health> {
  let watching = 0;
  return {
    check(req) {
      const status = state.get(req.service);
      if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status };
    },
    list() {
      const statuses: Record<string, ReturnType<typeof create<typeof HealthCheckResponseSchema>>> = {};
      for (const [name, status] of state.all()) statuses[name] = create(HealthCheckResponseSchema, { status });
      return { statuses };
    },
    async *watch(req, ctx) {
      if (watching >= maxWatches)
        throw new ConnectError(
          `too many Health.Watch streams (${maxWatches} open); retry later`,
          Code.ResourceExhausted,
        );
      watching++;
      let wake: (() => void) | undefined;
      const unsubscribe = state.onChange(() => wake?.());
      const aborted = new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
      try {
        let last: Status | undefined;
        while (!ctx.signal.aborted) {
          const status = state.get(req.service) ?? Status.SERVICE_UNKNOWN;
          if (status !== last) {
            last = status;
            yield { status };
          }
          await Promise.race([
            new Promise<void>((resolve) => {
              wake = resolve;
            }),
            aborted,
          ]);
        }
      } finally {
        watching--;
        unsubscribe();
      }
    },
  };
}
