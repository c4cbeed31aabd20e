/**
 * The Kubernetes objects of one model's GPU service: a Deployment (pods of the
 * image in infra/docker, the model mounted read-only, the service token and TLS
 * material from Secrets), its Service, a PodDisruptionBudget, a KEDA
 * ScaledObject and a ServiceMonitor.
 *
 * Stopping a pod, in order: the preStop pause lets the endpoints controller and
 * the tunnel stop sending it new requests; SIGTERM then makes the service refuse
 * new work and lets streams in flight finish within TWIG_DRAIN_GRACE_MS;
 * terminationGracePeriodSeconds covers both with a margin, so no stream is cut
 * by SIGKILL.
 */
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IEnvVar, IVolume, IVolumeMount } from "kubernetes-models/v1";
import { Service } from "kubernetes-models/v1/Service";
import { scaledObject } from "./autoscaling.js";
import { gpuServiceProbes } from "./probes.js";
import type { ModelDeployment, Settings } from "./settings.js";

export const GRPC_PORT = 50651;
export const METRICS_PORT = 9464;
/** Seconds between the end of the drain grace and SIGKILL. */
export const GRACE_MARGIN_SECONDS = 15;
const MODELS_MOUNT = "/models";
const TLS_MOUNT = "/etc/twigserve/tls";

/** A model name as a DNS-1035 label part (Service names allow no dots): "llava-1.5-7b" -> "llava-1-5-7b". */
export function slug(model: string): string {
  return model
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

/** The name of every object of a model's GPU service. */
export function objectName(model: ModelDeployment): string {
  return `twigserve-gpu-${slug(model.name)}`;
}

/** The labels that select a model's pods. */
export function podLabels(model: ModelDeployment): Record<string, string> {
  return { "app.kubernetes.io/name": "twigserve-gpu", "app.kubernetes.io/instance": slug(model.name) };
}

/** The in-cluster URL of a model's Service (what cloudflared forwards to). */
export function serviceUrl(s: Settings, model: ModelDeployment): string {
  return `http://${objectName(model)}.${s.namespace}.svc.cluster.local:${GRPC_PORT}`;
}

function environment(s: Settings, model: ModelDeployment): IEnvVar[] {
  const env: IEnvVar[] = [
    { name: "TWIG_GPU_HOST", value: "0.0.0.0" },
    { name: "TWIG_GPU_PORT", value: String(GRPC_PORT) },
    { name: "TWIG_METRICS_HOST", value: "0.0.0.0" }, // Prometheus scrapes through the pod's Service
    { name: "TWIG_METRICS_PORT", value: String(METRICS_PORT) },
    { name: "TWIG_MODELS_DIR", value: MODELS_MOUNT },
    { name: "TWIG_DEFAULT_MODEL", value: model.name },
    { name: "TWIG_EXECUTION_PROVIDER", value: model.flavour },
    { name: "TWIG_PRECISION", value: model.precision },
    { name: "TWIG_ENGINE_WORKERS", value: String(model.workers) },
    { name: "TWIG_ENGINE_THREADS", value: String(model.threads) },
    { name: "TWIG_MAX_QUEUE", value: String(model.maxQueue) },
    { name: "TWIG_MAX_BATCH", value: String(model.maxBatch) },
    { name: "TWIG_KV_BUDGET_BYTES", value: String(model.kvBudgetBytes) },
    { name: "TWIG_DRAIN_GRACE_MS", value: String(s.drainGraceMs) },
    { name: "TWIG_GRAPH_CACHE_DIR", value: "/cache/graphs" },
    {
      name: "TWIG_SERVICE_TOKEN",
      valueFrom: { secretKeyRef: { name: s.secrets.serviceToken.name, key: s.secrets.serviceToken.key } },
    },
  ];
  if (model.reach === "tls")
    env.push(
      { name: "TWIG_TLS_CERT", value: `${TLS_MOUNT}/tls.crt` },
      { name: "TWIG_TLS_KEY", value: `${TLS_MOUNT}/tls.key` },
    );
  return env;
}

function volumes(s: Settings, model: ModelDeployment): { volumes: IVolume[]; mounts: IVolumeMount[] } {
  const volumes: IVolume[] = [
    { name: "models", persistentVolumeClaim: { claimName: s.modelsClaim, readOnly: true } },
    { name: "cache", emptyDir: { sizeLimit: model.graphCacheSize } },
    { name: "tmp", emptyDir: { sizeLimit: "1Gi" } },
  ];
  const mounts: IVolumeMount[] = [
    // only this model's directory, so that the service loads only this model
    { name: "models", mountPath: `${MODELS_MOUNT}/${model.name}`, subPath: model.name, readOnly: true },
    { name: "cache", mountPath: "/cache" },
    { name: "tmp", mountPath: "/tmp" },
  ];
  if (model.reach === "tls") {
    volumes.push({ name: "tls", secret: { secretName: s.secrets.tls, defaultMode: 0o440 } });
    mounts.push({ name: "tls", mountPath: TLS_MOUNT, readOnly: true });
  }
  return { volumes, mounts };
}

/** The Deployment of one model (no replica count: its ScaledObject owns that). */
export function deployment(s: Settings, model: ModelDeployment): Deployment {
  const name = objectName(model);
  const labels = podLabels(model);
  const { volumes: podVolumes, mounts } = volumes(s, model);
  const gpu: Record<string, string> = model.flavour === "cuda" ? { "nvidia.com/gpu": "1" } : {};
  return new Deployment({
    metadata: { name, namespace: s.namespace, labels },
    spec: {
      selector: { matchLabels: labels },
      // a new pod must be ready before an old one stops (needs one spare GPU per model while rolling)
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: {
          labels,
          annotations: { "kubectl.kubernetes.io/default-container": "gpu-service" },
        },
        spec: {
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: s.preStopSeconds + Math.ceil(s.drainGraceMs / 1000) + GRACE_MARGIN_SECONDS,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 10001,
            runAsGroup: 10001,
            fsGroup: 10001,
            seccompProfile: { type: "RuntimeDefault" },
          },
          ...(model.flavour === "cuda"
            ? { tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }] }
            : {}),
          topologySpreadConstraints: [
            {
              maxSkew: 1,
              topologyKey: "kubernetes.io/hostname",
              whenUnsatisfiable: "ScheduleAnyway",
              labelSelector: { matchLabels: labels },
            },
          ],
          containers: [
            {
              name: "gpu-service",
              image: `${s.image.repository}:${s.image.version}-${model.flavour}`,
              ports: [
                { name: "grpc", containerPort: GRPC_PORT, protocol: "TCP" },
                { name: "metrics", containerPort: METRICS_PORT, protocol: "TCP" },
              ],
              env: environment(s, model),
              resources: {
                requests: { cpu: model.cpu, memory: model.memory, ...gpu },
                limits: { memory: model.memory, ...gpu },
              },
              ...gpuServiceProbes({
                port: GRPC_PORT,
                service: model.name,
                tls: model.reach === "tls",
                drainGraceMs: s.drainGraceMs,
              }),
              lifecycle: { preStop: { sleep: { seconds: s.preStopSeconds } } },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ["ALL"] },
              },
              volumeMounts: mounts,
            },
          ],
          volumes: podVolumes,
        },
      },
    },
  });
}

/** The model's in-cluster Service: gRPC (what cloudflared forwards to) and metrics (what Prometheus scrapes). */
export function service(s: Settings, model: ModelDeployment): Service {
  return new Service({
    metadata: { name: objectName(model), namespace: s.namespace, labels: podLabels(model) },
    spec: {
      type: "ClusterIP",
      selector: podLabels(model),
      ports: [
        { name: "grpc", port: GRPC_PORT, targetPort: "grpc", protocol: "TCP" },
        { name: "metrics", port: METRICS_PORT, targetPort: "metrics", protocol: "TCP" },
      ],
    },
  });
}

/** For reach "tls": the public LoadBalancer the edge connects to over HTTPS (gRPC port only, never metrics). */
export function publicService(s: Settings, model: ModelDeployment): Service {
  return new Service({
    metadata: { name: `${objectName(model)}-public`, namespace: s.namespace, labels: podLabels(model) },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      selector: podLabels(model),
      ports: [{ name: "grpc", port: 443, targetPort: "grpc", protocol: "TCP" }],
    },
  });
}

/** Voluntary disruptions (node drains, upgrades) take one pod at a time. */
export function disruptionBudget(s: Settings, model: ModelDeployment): PodDisruptionBudget {
  return new PodDisruptionBudget({
    metadata: { name: objectName(model), namespace: s.namespace, labels: podLabels(model) },
    spec: { maxUnavailable: 1, selector: { matchLabels: podLabels(model) } },
  });
}

/** Prometheus scrapes every pod of the model through its Service's metrics port. */
export function serviceMonitor(s: Settings, model: ModelDeployment): ServiceMonitor {
  return new ServiceMonitor({
    metadata: {
      name: objectName(model),
      namespace: s.namespace,
      labels: { ...podLabels(model), ...s.prometheus.serviceMonitorLabels },
    },
    spec: {
      selector: { matchLabels: podLabels(model) },
      namespaceSelector: { matchNames: [s.namespace] },
      endpoints: [{ port: "metrics", path: "/metrics", interval: "15s", scheme: "http" }],
    },
  });
}

/** Every object of one model's GPU service. */
export function gpuServiceObjects(s: Settings, model: ModelDeployment) {
  return [
    deployment(s, model),
    service(s, model),
    ...(model.reach === "tls" ? [publicService(s, model)] : []),
    disruptionBudget(s, model),
    scaledObject(s, model, objectName(model)),
    serviceMonitor(s, model),
  ];
}
