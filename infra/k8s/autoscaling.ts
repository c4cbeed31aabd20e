/**
 * KEDA scales each model's Deployment on what its GPU services report to
 * Prometheus (gpu-service/src/server/metrics.ts; the ServiceMonitor adds the
 * `namespace` and `service` labels). A prometheus trigger's value is divided by
 * its threshold to give the replicas wanted (KEDA's AverageValue), and the
 * largest wish among the triggers wins:
 *
 * - queue: `twig_queue_depth`, requests waiting for an engine worker. More than
 *   QUEUE_PER_REPLICA waiting per replica adds replicas.
 * - busy: `twig_running_requests`, requests being generated. Each pod runs at most
 *   `workers * maxBatch` at once (each engine worker decodes up to `maxBatch`
 *   together); aiming at BUSY_TARGET of that keeps headroom for bursts.
 * - kv-memory: `twig_kv_bytes`, the KV memory the pods' batches hold, in pods' worth
 *   (`workers * kvBudgetBytes` each): past KV_TARGET of it new sequences soon wait
 *   for memory, however few they are (long prompts, long answers).
 */
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import type { ModelDeployment, Settings } from "./settings.js";

/** Waiting requests per replica before KEDA adds one. */
export const QUEUE_PER_REPLICA = 2;
/** Fraction of a pod's places (engine workers times their batch) that should be busy on average. */
export const BUSY_TARGET = 0.8;
/** Fraction of a pod's KV budget that should be in use on average. */
export const KV_TARGET = 0.75;

type Trigger = ScaledObject["spec"]["triggers"][number];

function prometheusTrigger(s: Settings, name: string, query: string, threshold: number): Trigger {
  return {
    type: "prometheus",
    name,
    metricType: "AverageValue",
    metadata: { serverAddress: s.prometheus.serverAddress, query, threshold: String(threshold) },
  };
}

/** The PromQL selector of one model's series. */
export function seriesSelector(s: Settings, model: ModelDeployment): string {
  return `{namespace="${s.namespace}",model="${model.name}"}`;
}

/** The continuous-batching triggers: the KV memory in use against the pods' budgets. */
export function batchingTriggers(s: Settings, model: ModelDeployment): Trigger[] {
  const sel = seriesSelector(s, model);
  const perPod = model.workers * model.kvBudgetBytes;
  return [prometheusTrigger(s, "kv-memory", `sum(twig_kv_bytes${sel}) / ${perPod}`, KV_TARGET)];
}

/** The ScaledObject of one model's Deployment. */
export function scaledObject(s: Settings, model: ModelDeployment, deployment: string): ScaledObject {
  const sel = seriesSelector(s, model);
  return new ScaledObject({
    metadata: { name: deployment, namespace: s.namespace },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: deployment },
      minReplicaCount: model.minReplicas,
      maxReplicaCount: model.maxReplicas,
      pollingInterval: 15,
      cooldownPeriod: 300,
      // Prometheus unreachable: hold the floor rather than guess
      fallback: { failureThreshold: 4, replicas: model.minReplicas },
      advanced: {
        horizontalPodAutoscalerConfig: {
          behavior: {
            // a GPU pod takes minutes to load its model: add quickly, remove slowly
            scaleUp: { stabilizationWindowSeconds: 0, policies: [{ type: "Pods", value: 2, periodSeconds: 60 }] },
            scaleDown: { stabilizationWindowSeconds: 600, policies: [{ type: "Pods", value: 1, periodSeconds: 300 }] },
          },
        },
      },
      triggers: [
        prometheusTrigger(s, "queue", `sum(twig_queue_depth${sel})`, QUEUE_PER_REPLICA),
        prometheusTrigger(s, "busy", `sum(twig_running_requests${sel})`, model.workers * model.maxBatch * BUSY_TARGET),
        ...batchingTriggers(s, model),
      ],
    },
  });
}
