/**
 * What the Kubernetes manifests deploy: this is the file an operator edits (then
 * `npm run infra:render`). Every model gets its own Deployment, Service,
 * PodDisruptionBudget, KEDA ScaledObject and ServiceMonitor (`gpu-service.ts`); the
 * models reached through the Cloudflare Tunnel get an ingress rule in the in-cluster
 * cloudflared (`tunnel.ts`). Secrets are referenced by name only: they are created
 * in the cluster (kubectl, an external secrets operator, cert-manager), never here.
 */

/** Where a model's pods run: GPU nodes with ONNX Runtime's CUDA provider, or plain CPU nodes. */
export type Flavour = "cuda" | "cpu";

/**
 * How the edge reaches a model's shard:
 * - "tunnel": through the Cloudflare Tunnel (cloudflared in the cluster dials out; no
 *   port is opened). The pods speak cleartext inside the cluster, and Kubernetes' own
 *   gRPC probe checks them.
 * - "tls": directly over HTTPS to a LoadBalancer Service; the pods serve TLS with a
 *   certificate from a Secret. Kubernetes' gRPC probe cannot speak TLS, so the probes
 *   run the image's health probe script instead.
 */
export type Reach = "tunnel" | "tls";

export interface ModelDeployment {
  /** The model's directory name in the models volume; also its name in the API and in MODEL_ROUTES. */
  name: string;
  flavour: Flavour;
  reach: Reach;
  /** Public hostname of this model's shard (the edge's MODEL_ROUTES entry is https://<hostname>). */
  hostname: string;
  /** Replicas KEDA keeps between. */
  minReplicas: number;
  maxReplicas: number;
  /** TWIG_ENGINE_WORKERS and TWIG_ENGINE_THREADS. */
  workers: number;
  threads: number;
  /** TWIG_PRECISION. */
  precision: "fp32" | "fp16" | "int4";
  /** TWIG_MAX_QUEUE: requests that may wait per pod before RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** TWIG_MAX_BATCH: requests each engine worker decodes together (continuous batching; 1: one at a time). */
  maxBatch: number;
  /** TWIG_KV_BUDGET_BYTES: the KV memory each worker's batch may hold (in the container's memory, beside the weights). */
  kvBudgetBytes: number;
  /** Container resources (memory holds every worker's copy of the weights and the KV caches). */
  cpu: string;
  memory: string;
  /** Size limit of the graph cache (emptyDir): graphs over 2 GB are written there once per pod. */
  graphCacheSize: string;
}

export interface Settings {
  namespace: string;
  /** Image repository; the tag is `<version>-<flavour>` (infra/docker/gpu-service.Dockerfile, --target). */
  image: { repository: string; version: string };
  /** TWIG_DRAIN_GRACE_MS: how long in-flight streams may finish after SIGTERM. */
  drainGraceMs: number;
  /** preStop pause before SIGTERM, so that endpoints and the tunnel stop sending new requests first. */
  preStopSeconds: number;
  secrets: {
    /** Opaque Secret with the bearer token the edge presents (its GPU_SERVICE_TOKEN). */
    serviceToken: { name: string; key: string };
    /** kubernetes.io/tls Secret (tls.crt, tls.key) for the models with reach "tls". */
    tls: string;
    /** Opaque Secret holding cloudflared's tunnel credentials file. */
    tunnelCredentials: { name: string; key: string };
  };
  /** PersistentVolumeClaim (ReadOnlyMany) holding one directory per model. */
  modelsClaim: string;
  /** Prometheus as KEDA queries it, and the label the Prometheus operator selects ServiceMonitors by. */
  prometheus: { serverAddress: string; serviceMonitorLabels: Record<string, string> };
  /** The in-cluster Cloudflare Tunnel connector. */
  tunnel: { id: string; image: string; replicas: number };
  models: ModelDeployment[];
}

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

export const settings: Settings = {
  namespace: "twigserve",
  image: { repository: "registry.example.com/twigserve/gpu-service", version: "0.1.0" },
  drainGraceMs: 45_000,
  preStopSeconds: 10,
  secrets: {
    serviceToken: { name: "twigserve-gpu-token", key: "token" },
    tls: "twigserve-gpu-tls",
    tunnelCredentials: { name: "twigserve-tunnel-credentials", key: "credentials.json" },
  },
  modelsClaim: "twigserve-models",
  prometheus: {
    serverAddress: "http://prometheus-operated.monitoring.svc.cluster.local:9090",
    serviceMonitorLabels: { release: "kube-prometheus-stack" },
  },
  tunnel: {
    // the tunnel's UUID (cloudflared tunnel create twigserve-gpu); a placeholder until then
    id: "00000000-0000-0000-0000-000000000000",
    image: "cloudflare/cloudflared:2025.8.1",
    replicas: 2,
  },
  models: [
    {
      name: "llava-1.5-7b",
      flavour: "cuda",
      reach: "tunnel",
      hostname: "gpu-llava-1-5-7b.twigserve.example",
      minReplicas: 1,
      maxReplicas: 8,
      workers: 1,
      threads: 4,
      precision: "int4",
      maxQueue: 32,
      // about 1 MiB of fp32 KV a position (32 layers, 4096 wide): 16 sequences of 500 positions
      maxBatch: 16,
      kvBudgetBytes: 8 * GiB,
      cpu: "6",
      memory: "48Gi",
      graphCacheSize: "40Gi",
    },
    {
      name: "demo",
      flavour: "cpu",
      reach: "tls",
      hostname: "gpu-demo.twigserve.example",
      minReplicas: 1,
      maxReplicas: 4,
      workers: 2,
      threads: 1,
      precision: "fp32",
      maxQueue: 32,
      // 24 KiB of KV a position: a full batch of 16 at 512 positions is about 200 MB
      maxBatch: 16,
      kvBudgetBytes: 256 * MiB,
      cpu: "2",
      memory: "2Gi",
      graphCacheSize: "1Gi",
    },
  ],
};
