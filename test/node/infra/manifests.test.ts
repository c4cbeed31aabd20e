/**
 * The Kubernetes manifests (infra/k8s): rendered from the settings, every object
 * validates against its Kubernetes (or KEDA, or prometheus-operator) schema, the
 * committed YAML is what the code renders and validates too once read back, and
 * the invariants hold: grace above the drain, probes on the gRPC port and about
 * the pod's model, the autoscaler's queries on metrics the service exports, the
 * token from a Secret and no secret value anywhere, the model mounted read-only,
 * GPUs requested only by the CUDA flavour.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IContainer, IEnvVar } from "kubernetes-models/v1";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Service } from "kubernetes-models/v1/Service";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { loadConfig } from "../../../gpu-service/src/server/config.js";
import { registry } from "../../../gpu-service/src/server/metrics.js";
import { GRPC_PORT, METRICS_PORT, objectName } from "../../../infra/k8s/gpu-service.js";
import { renderManifests } from "../../../infra/k8s/manifests.js";
import { PROBE_SCRIPT } from "../../../infra/k8s/probes.js";
import { type Settings, settings } from "../../../infra/k8s/settings.js";
import { repoRoot } from "../../support/gpu-service.js";

const renderedDir = join(repoRoot, "infra/k8s/rendered");
const files = renderManifests(settings);
const objects = files.flatMap((f) => f.objects.map((o) => o.toJSON() as Record<string, unknown>));
// biome-ignore lint/suspicious/noExplicitAny: plain objects read back from YAML
type Obj = any;
const ofKind = (kind: string): Obj[] => objects.filter((o) => o.kind === kind);

// biome-ignore lint/suspicious/noExplicitAny: the model classes take their own interfaces
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  "v1/Namespace": Namespace,
  "v1/Service": Service,
  "v1/ConfigMap": ConfigMap,
  "apps/v1/Deployment": Deployment,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

function gpuContainer(d: Obj): IContainer {
  const c = d.spec.template.spec.containers.find((x: IContainer) => x.name === "gpu-service");
  expect(c, `${d.metadata.name} has a gpu-service container`).toBeDefined();
  return c;
}

function envOf(c: IContainer): Map<string, IEnvVar> {
  return new Map((c.env ?? []).map((e) => [e.name, e]));
}

/** The GPU service's configuration from a container's environment, as the service loads it (TLS files are read at load time: left out; the token comes from a Secret). */
function serviceConfig(c: IContainer): ReturnType<typeof loadConfig> {
  const plain = Object.fromEntries(
    (c.env ?? [])
      .filter((e) => e.value !== undefined && !e.name.startsWith("TWIG_TLS_"))
      .map((e) => [e.name, e.value as string]),
  );
  return loadConfig({ ...plain, TWIG_SERVICE_TOKEN: "from-the-secret" });
}

const gpuDeployments = () => ofKind("Deployment").filter((d) => d.metadata.name.startsWith("twigserve-gpu-"));

describe("rendered Kubernetes manifests", () => {
  it("validate against their schemas, as built and as committed YAML read back", () => {
    let checked = 0;
    for (const file of files)
      for (const o of file.objects) {
        o.validate();
        checked++;
      }
    expect(checked).toBe(objects.length);
    // a schema violation is caught (the check can fail)
    expect(() =>
      new Deployment({
        metadata: { name: "x" },
        spec: { selector: {}, template: { spec: { containers: [{ name: "c", image: 3 as unknown as string }] } } },
      }).validate(),
    ).toThrow(/image must be string/);

    let readBack = 0;
    for (const name of readdirSync(renderedDir).filter((n) => n !== "kustomization.yaml")) {
      for (const doc of parseAllDocuments(readFileSync(join(renderedDir, name), "utf8"))) {
        const data = doc.toJS() as Obj;
        if (!data) continue;
        const Model = MODELS[`${data.apiVersion}/${data.kind}`];
        expect(Model, `${name}: a model class for ${data.apiVersion} ${data.kind}`).toBeDefined();
        new Model(data).validate();
        readBack++;
      }
    }
    expect(readBack).toBe(objects.length);
  });

  it("are committed exactly as rendered (npm run infra:render)", () => {
    const names = readdirSync(renderedDir).sort();
    expect(names).toEqual(files.map((f) => f.name).sort());
    for (const f of files) expect(readFileSync(join(renderedDir, f.name), "utf8"), f.name).toBe(f.text);
    const kustomization = parse(readFileSync(join(renderedDir, "kustomization.yaml"), "utf8"));
    expect(kustomization.resources).toEqual(files.filter((f) => f.name !== "kustomization.yaml").map((f) => f.name));
  });

  it("give every model a Deployment, Service, PodDisruptionBudget, ScaledObject and ServiceMonitor", () => {
    expect(settings.models.length).toBeGreaterThanOrEqual(2);
    for (const m of settings.models) {
      const name = objectName(m);
      for (const kind of ["Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "ServiceMonitor"])
        expect(
          ofKind(kind).some((o) => o.metadata.name === name),
          `${kind} ${name}`,
        ).toBe(true);
      // Service names are DNS-1035 labels (no dots), at most 63 characters
      expect(name).toMatch(/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/);
    }
    expect(gpuDeployments()).toHaveLength(settings.models.length);
  });

  it("stop a pod only after its drain: grace > preStop pause + TWIG_DRAIN_GRACE_MS, liveness slower than a drain", () => {
    let checked = 0;
    for (const d of gpuDeployments()) {
      const c = gpuContainer(d);
      const drainMs = Number(envOf(c).get("TWIG_DRAIN_GRACE_MS")?.value);
      const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
      expect(drainMs).toBeGreaterThan(0);
      expect(preStop).toBeGreaterThan(0);
      expect(d.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(preStop * 1000 + drainMs);
      const live = c.livenessProbe as Obj;
      expect(live.periodSeconds * live.failureThreshold * 1000).toBeGreaterThan(drainMs);
      checked++;
    }
    expect(checked).toBe(settings.models.length);
  });

  it("probe gRPC health on the container's gRPC port, about the pod's own model", () => {
    let checked = 0;
    for (const d of gpuDeployments()) {
      const c = gpuContainer(d);
      const env = envOf(c);
      const port = Number(env.get("TWIG_GPU_PORT")?.value);
      expect(port).toBe(GRPC_PORT);
      expect(c.ports?.find((p) => p.name === "grpc")?.containerPort).toBe(port);
      const model = env.get("TWIG_DEFAULT_MODEL")?.value;
      const tls = env.has("TWIG_TLS_CERT");
      for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe] as Obj[]) {
        if (tls) {
          // the built-in gRPC probe cannot speak TLS: the image's probe script does
          expect(probe.grpc).toBeUndefined();
          const cmd: string[] = probe.exec.command;
          expect(cmd.slice(0, 2)).toEqual(["node", PROBE_SCRIPT]);
          expect(cmd[cmd.indexOf("--port") + 1]).toBe(String(port));
          expect(cmd[cmd.indexOf("--service") + 1]).toBe(model);
        } else {
          expect(probe.grpc).toEqual({ port, service: model });
        }
        checked++;
      }
    }
    expect(checked).toBe(3 * settings.models.length);
  });

  it("set only variables the service reads, and a configuration it accepts", () => {
    const source = readFileSync(join(repoRoot, "gpu-service/src/server/config.ts"), "utf8");
    let checked = 0;
    for (const d of gpuDeployments()) {
      const env = envOf(gpuContainer(d));
      for (const name of env.keys()) {
        expect(source, `${name} is read by gpu-service/src/server/config.ts`).toContain(name);
        checked++;
      }
      const config = serviceConfig(gpuContainer(d));
      expect(config.port).toBe(GRPC_PORT);
      expect(config.metricsPort).toBe(METRICS_PORT);
      expect(config.drainGraceMs).toBe(settings.drainGraceMs);
      expect(config.modelsDir).toBe("/models");
      // Prometheus scrapes the pod's address: /metrics must not be bound to loopback
      const metricsHost = (config as { metricsHost?: string }).metricsHost ?? config.host;
      expect(metricsHost, "set TWIG_METRICS_HOST in infra/k8s/gpu-service.ts, then npm run infra:render").not.toMatch(
        /^(127\.|localhost$|::1$)/,
      );
    }
    expect(checked).toBeGreaterThan(10 * settings.models.length);
  });

  it("batch requests in every worker, with each worker's KV budget within its share of the container's memory", () => {
    const bytes = (q: string) => {
      const m = /^(\d+)(Mi|Gi)$/.exec(q);
      if (!m) throw new Error(`memory ${q}: expected a number of Mi or Gi`);
      return Number(m[1]) * 1024 ** (m[2] === "Gi" ? 3 : 2);
    };
    let checked = 0;
    for (const d of gpuDeployments()) {
      const c = gpuContainer(d);
      const env = envOf(c);
      const config = serviceConfig(c);
      expect(config.maxBatch, `${d.metadata?.name}: TWIG_MAX_BATCH`).toBeGreaterThan(1);
      const budget = config.kvBudgetBytes as number;
      const workers = Number(env.get("TWIG_ENGINE_WORKERS")?.value);
      expect(budget).toBeGreaterThan(0);
      // the batches' KV of every worker in at most a quarter of the memory limit (the rest: weights, twice per worker, and the runtime)
      expect(workers * budget).toBeLessThanOrEqual(bytes(c.resources?.limits?.memory as string) / 4);
      checked++;
    }
    expect(checked).toBe(settings.models.length);
  });

  it("take the service token and TLS material from Secrets and commit no secret value", () => {
    expect(ofKind("Secret")).toHaveLength(0);
    let refs = 0;
    for (const d of gpuDeployments()) {
      const spec = d.spec.template.spec;
      const c = gpuContainer(d);
      const token = envOf(c).get("TWIG_SERVICE_TOKEN");
      expect(token?.value).toBeUndefined();
      expect(token?.valueFrom?.secretKeyRef?.name).toBe(settings.secrets.serviceToken.name);
      refs++;
      const cert = envOf(c).get("TWIG_TLS_CERT")?.value;
      if (cert) {
        const tlsVolume = spec.volumes.find((v: Obj) => v.secret?.secretName === settings.secrets.tls);
        const mount = c.volumeMounts?.find((m) => m.name === tlsVolume?.name);
        expect(mount?.readOnly).toBe(true);
        expect(cert.startsWith(`${mount?.mountPath}/`)).toBe(true);
        expect(envOf(c).get("TWIG_TLS_KEY")?.value?.startsWith(`${mount?.mountPath}/`)).toBe(true);
        refs++;
      }
      // any variable named like a credential comes from a Secret, never a literal
      for (const e of c.env ?? [])
        if (/TOKEN|SECRET|PASSWORD|CREDENTIAL/i.test(e.name)) expect(e.valueFrom?.secretKeyRef, e.name).toBeDefined();
    }
    expect(refs).toBe(settings.models.length + settings.models.filter((m) => m.reach === "tls").length);
    const text = files.map((f) => f.text).join("\n");
    expect(text).not.toMatch(/-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----/);
    expect(text).not.toMatch(/sk-twig-|Bearer [A-Za-z0-9]/);
    expect(text).not.toMatch(/"?AccountTag"?|TunnelSecret/);
  });

  it("mount the model read-only, request a GPU only in the CUDA flavour, run as non-root", () => {
    let checked = 0;
    for (const m of settings.models) {
      const d = gpuDeployments().find((x) => x.metadata.name === objectName(m));
      const spec = d.spec.template.spec;
      const c = gpuContainer(d);
      const claim = spec.volumes.find((v: Obj) => v.persistentVolumeClaim?.claimName === settings.modelsClaim);
      expect(claim.persistentVolumeClaim.readOnly).toBe(true);
      const mount = c.volumeMounts?.find((v) => v.name === claim.name);
      expect(mount).toMatchObject({ mountPath: `/models/${m.name}`, subPath: m.name, readOnly: true });
      const gpus = (c.resources?.limits as Obj)?.["nvidia.com/gpu"];
      if (m.flavour === "cuda") {
        expect(gpus).toBe("1");
        expect(c.image).toMatch(/-cuda$/);
        expect(envOf(c).get("TWIG_EXECUTION_PROVIDER")?.value).toBe("cuda");
      } else {
        expect(gpus).toBeUndefined();
        expect(c.image).toMatch(/-cpu$/);
      }
      expect(spec.securityContext.runAsNonRoot).toBe(true);
      expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
      expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
      // the ScaledObject owns the replica count
      expect(d.spec.replicas).toBeUndefined();
      checked++;
    }
    expect(checked).toBe(settings.models.length);
  });

  it("select their own pods: Services, budgets, monitors, autoscalers and the tunnel point at what exists", () => {
    let checked = 0;
    for (const d of gpuDeployments()) {
      const labels = d.spec.template.metadata.labels;
      const name = d.metadata.name;
      const matches = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v);
      const svc = ofKind("Service").find((s) => s.metadata.name === name);
      expect(matches(svc.spec.selector)).toBe(true);
      expect(svc.spec.type).toBe("ClusterIP");
      expect(
        matches(ofKind("PodDisruptionBudget").find((p) => p.metadata.name === name).spec.selector.matchLabels),
      ).toBe(true);
      const monitor = ofKind("ServiceMonitor").find((s) => s.metadata.name === name);
      expect(Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => svc.metadata.labels[k] === v)).toBe(
        true,
      );
      expect(svc.spec.ports.map((p: Obj) => p.name)).toContain(monitor.spec.endpoints[0].port);
      expect(ofKind("ScaledObject").find((s) => s.metadata.name === name).spec.scaleTargetRef).toMatchObject({
        kind: "Deployment",
        name,
      });
      // metrics never leave the cluster: a public Service carries the gRPC port only
      for (const pub of ofKind("Service").filter((s) => s.spec.type === "LoadBalancer" && matches(s.spec.selector)))
        expect(pub.spec.ports.map((p: Obj) => p.targetPort)).toEqual(["grpc"]);
      checked++;
    }
    expect(checked).toBe(settings.models.length);

    const tunnel = parse(ofKind("ConfigMap")[0].data["config.yaml"]);
    const tunnelModels = settings.models.filter((m) => m.reach === "tunnel");
    expect(tunnel.ingress).toHaveLength(tunnelModels.length + 1);
    expect(tunnel.ingress.at(-1)).toEqual({ service: "http_status:404" });
    for (const [i, m] of tunnelModels.entries()) {
      expect(tunnel.ingress[i].hostname).toBe(m.hostname);
      expect(tunnel.ingress[i].service).toBe(
        `http://${objectName(m)}.${settings.namespace}.svc.cluster.local:${GRPC_PORT}`,
      );
    }
  });

  it("scale on metrics the GPU service exports: queue, busy places and the batches' KV memory", async () => {
    const exported = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    let checked = 0;
    for (const so of ofKind("ScaledObject")) {
      expect(so.spec.triggers.map((t: Obj) => t.name)).toEqual(["queue", "busy", "kv-memory"]);
      for (const t of so.spec.triggers) {
        expect(t.type).toBe("prometheus");
        const names: string[] = t.metadata.query.match(/twig_[a-z_]+/g);
        expect(names.length).toBeGreaterThan(0);
        for (const n of names) expect(exported, `${n} is exported by gpu-service/src/server/metrics.ts`).toContain(n);
        expect(Number(t.metadata.threshold)).toBeGreaterThan(0);
        checked++;
      }
    }
    expect(checked).toBe(3 * settings.models.length);
    // the busy trigger counts a pod's places: workers times their batch
    for (const m of settings.models) {
      const so = ofKind("ScaledObject").find((o: Obj) => o.metadata.name === objectName(m));
      const busy = so.spec.triggers.find((t: Obj) => t.name === "busy");
      expect(Number(busy.metadata.threshold)).toBeCloseTo(m.workers * m.maxBatch * 0.8, 6);
    }
  });

  it("follow the settings: a third model on CPU behind the tunnel gets its own objects and ingress rule", () => {
    const more: Settings = {
      ...settings,
      models: [
        ...settings.models,
        { ...settings.models[1], name: "llava-1.5-13b", reach: "tunnel", hostname: "gpu-13b.example" },
      ],
    };
    const rendered = renderManifests(more);
    expect(rendered.map((f) => f.name)).toContain("gpu-llava-1-5-13b.yaml");
    for (const f of rendered) for (const o of f.objects) o.validate();
    const tunnel = parse(rendered.find((f) => f.name === "tunnel.yaml")?.text.split("---\n")[1] ?? "");
    expect(tunnel.data["config.yaml"]).toContain("gpu-13b.example");
  });
});
