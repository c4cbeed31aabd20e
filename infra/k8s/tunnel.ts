/**
 * The Cloudflare Tunnel connector inside the cluster: cloudflared dials out to
 * Cloudflare and carries each tunnel model's public hostname to that model's
 * Service, so the GPU nodes open no inbound port. Its ingress rules are made
 * from the same settings as the Services, so a hostname cannot point at a
 * Service that does not exist. The tunnel's credentials come from a Secret.
 */
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { stringify } from "yaml";
import { serviceUrl } from "./gpu-service.js";
import type { Settings } from "./settings.js";

export const TUNNEL_NAME = "twigserve-tunnel";
const METRICS = 2000;
const labels = { "app.kubernetes.io/name": TUNNEL_NAME };

/** One ingress rule per model reached through the tunnel, then cloudflared's mandatory catch-all. */
export function tunnelIngress(s: Settings): { hostname?: string; service: string; originRequest?: object }[] {
  return [
    ...s.models
      .filter((m) => m.reach === "tunnel")
      .map((m) => ({
        hostname: m.hostname,
        service: serviceUrl(s, m),
        // streams are long-lived; the edge's own deadline decides when one is too slow
        originRequest: { connectTimeout: "10s", keepAliveTimeout: "90s", tcpKeepAlive: "30s" },
      })),
    { service: "http_status:404" },
  ];
}

/** cloudflared's config.yaml. */
export function tunnelConfig(s: Settings): string {
  return stringify({
    tunnel: s.tunnel.id,
    "credentials-file": `/etc/cloudflared/credentials/${s.secrets.tunnelCredentials.key}`,
    metrics: `0.0.0.0:${METRICS}`,
    "no-autoupdate": true,
    ingress: tunnelIngress(s),
  });
}

/** ConfigMap, Deployment and PodDisruptionBudget of the connector. */
export function tunnelObjects(s: Settings) {
  const config = new ConfigMap({
    metadata: { name: TUNNEL_NAME, namespace: s.namespace, labels },
    data: { "config.yaml": tunnelConfig(s) },
  });
  const connector = new Deployment({
    metadata: { name: TUNNEL_NAME, namespace: s.namespace, labels },
    spec: {
      replicas: s.tunnel.replicas,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: "RuntimeDefault" } },
          containers: [
            {
              name: "cloudflared",
              image: s.tunnel.image,
              args: ["tunnel", "--config", "/etc/cloudflared/config/config.yaml", "run"],
              ports: [{ name: "metrics", containerPort: METRICS }],
              livenessProbe: {
                httpGet: { path: "/ready", port: METRICS },
                periodSeconds: 10,
                failureThreshold: 3,
                initialDelaySeconds: 10,
              },
              resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "256Mi" } },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ["ALL"] },
              },
              volumeMounts: [
                { name: "config", mountPath: "/etc/cloudflared/config", readOnly: true },
                { name: "credentials", mountPath: "/etc/cloudflared/credentials", readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: "config", configMap: { name: TUNNEL_NAME } },
            {
              name: "credentials",
              secret: {
                secretName: s.secrets.tunnelCredentials.name,
                items: [{ key: s.secrets.tunnelCredentials.key, path: s.secrets.tunnelCredentials.key }],
              },
            },
          ],
        },
      },
    },
  });
  const budget = new PodDisruptionBudget({
    metadata: { name: TUNNEL_NAME, namespace: s.namespace, labels },
    spec: { minAvailable: 1, selector: { matchLabels: labels } },
  });
  return [config, connector, budget];
}
