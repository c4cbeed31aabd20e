/**
 * Health probes of a GPU service pod, all through grpc.health.v1.Health and all
 * about the pod's own model (its status is SERVING once the model is loaded and
 * warmed up). Cleartext pods use Kubernetes' built-in gRPC probe; pods that serve
 * TLS run the image's probe script (gpu-service/src/health-probe.mjs), because the
 * built-in probe has no TLS mode.
 *
 * - startup: a large model loads and warms up for minutes; liveness waits for it.
 * - readiness: SERVING, else the pod leaves the Service's endpoints.
 * - liveness: the same question, asked slowly; a pod that has not answered SERVING
 *   for longer than the drain grace is restarted (never in the middle of a drain).
 */
import type { IProbe } from "kubernetes-models/v1";

/** Where the image keeps its probe script (WORKDIR /app in infra/docker/gpu-service.Dockerfile). */
export const PROBE_SCRIPT = "/app/gpu-service/src/health-probe.mjs";

export interface ProbeTarget {
  /** The container's gRPC port (TWIG_GPU_PORT). */
  port: number;
  /** The Health service name asked about: the model's name. */
  service: string;
  /** The pod serves TLS: use the probe script. */
  tls: boolean;
  /** TWIG_DRAIN_GRACE_MS: liveness must not give up on a pod sooner than a drain lasts. */
  drainGraceMs: number;
}

function action(t: ProbeTarget, timeoutSeconds: number): IProbe {
  if (!t.tls) return { grpc: { port: t.port, service: t.service }, timeoutSeconds };
  return {
    exec: {
      command: [
        "node",
        PROBE_SCRIPT,
        "--service",
        t.service,
        "--port",
        String(t.port),
        "--timeout",
        String((timeoutSeconds - 1) * 1000),
      ],
    },
    timeoutSeconds,
  };
}

/** The three probes of a GPU service container. */
export function gpuServiceProbes(t: ProbeTarget): {
  startupProbe: IProbe;
  readinessProbe: IProbe;
  livenessProbe: IProbe;
} {
  const livenessPeriod = 20;
  return {
    // up to 20 minutes to load and warm up
    startupProbe: { ...action(t, 5), periodSeconds: 10, failureThreshold: 120 },
    readinessProbe: { ...action(t, 5), periodSeconds: 5, failureThreshold: 2, successThreshold: 1 },
    livenessProbe: {
      ...action(t, 5),
      periodSeconds: livenessPeriod,
      failureThreshold: Math.ceil(t.drainGraceMs / 1000 / livenessPeriod) + 2,
    },
  };
}
