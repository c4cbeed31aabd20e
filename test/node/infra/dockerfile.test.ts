/**
 * The GPU service image's build file (infra/docker/gpu-service.Dockerfile). No
 * container engine runs here, so the image is not built in the tests: the file
 * is linted (dockerfile-utils, the linter behind the VS Code Docker extension,
 * every rule at warning level or above) and parsed (dockerfile-ast) to hold the
 * rules that matter for this service: pinned base images, a non-root numeric
 * user, a health check through the project's gRPC health probe, the service
 * started by Node itself (so SIGTERM reaches it and it drains), the
 * onnxruntime-node install flags of each variant, and every file it copies
 * present in the build context and not excluded by .dockerignore.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DockerfileParser, type Instruction } from "dockerfile-ast";
import { ValidationSeverity, validate } from "dockerfile-utils";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../gpu-service/src/server/config.js";
import { PROBE_SCRIPT } from "../../../infra/k8s/probes.js";
import { repoRoot } from "../../support/gpu-service.js";

const dockerfilePath = join(repoRoot, "infra/docker/gpu-service.Dockerfile");
const text = readFileSync(dockerfilePath, "utf8");
const dockerfile = DockerfileParser.parse(text);
const W = ValidationSeverity.WARNING;

interface Stage {
  name: string;
  image: string;
  instructions: Instruction[];
}

/** The build stages, each with its instructions after FROM. */
function stages(): Stage[] {
  const out: Stage[] = [];
  for (const ins of dockerfile.getInstructions()) {
    const args = ins.getArguments().map((a) => a.getValue());
    if (ins.getKeyword() === "FROM") out.push({ image: args[0], name: args[2] ?? "", instructions: [] });
    else out.at(-1)?.instructions.push(ins);
  }
  return out;
}

const stage = (name: string): Stage => {
  const s = stages().find((x) => x.name === name);
  if (!s) throw new Error(`no stage ${name}`);
  return s;
};
const last = (s: Stage, keyword: string) => s.instructions.filter((i) => i.getKeyword() === keyword).at(-1);
const content = (i: Instruction | undefined) => i?.getArgumentsContent() ?? "";
/** An instruction's text after its keyword, flags included. */
const raw = (i: Instruction) => i.getTextContent().replace(/^\s*[A-Za-z]+\s+/, "");

/** .dockerignore patterns, as the simple forms used there: a path (and all below it) or **\/name. */
function ignored(path: string): boolean {
  const patterns = readFileSync(join(repoRoot, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  return patterns.some((p) => {
    if (p.startsWith("**/")) {
      const name = p.slice(3);
      const segments = path.split("/");
      if (name.startsWith("*.")) return segments.some((s) => s.endsWith(name.slice(1)));
      return segments.includes(name);
    }
    if (p.startsWith("*.")) return !path.includes("/") && path.endsWith(p.slice(1));
    expect(p, `.dockerignore pattern ${p} is of a form this test understands`).not.toMatch(/[*?[\]!]/);
    return path === p || path.startsWith(`${p}/`);
  });
}

describe("infra/docker/gpu-service.Dockerfile", () => {
  it("passes the linter with every rule on", () => {
    const diagnostics = validate(text, {
      deprecatedMaintainer: W,
      directiveCasing: W,
      emptyContinuationLine: W,
      instructionCasing: W,
      instructionCmdMultiple: W,
      instructionEntrypointMultiple: W,
      instructionHealthcheckMultiple: W,
      instructionJSONInSingleQuotes: W,
      instructionWorkdirRelative: W,
    });
    expect(diagnostics.map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
    // the linter does find faults (the check can fail)
    expect(validate(`${text}\nworkdir app\nCMD ["x"]\n`, { instructionCasing: W }).length).toBeGreaterThan(0);
  });

  it("pins every base image to an exact version, CUDA 12 with cuDNN 9 for the cuda variant", () => {
    const names = new Set<string>();
    let external = 0;
    for (const s of stages()) {
      if (!names.has(s.image)) {
        expect(s.image, `FROM ${s.image}`).toMatch(
          /^[a-z0-9./-]+:\d+\.\d+\.\d+(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?$/,
        );
        external++;
      }
      names.add(s.name);
    }
    expect(external).toBe(3);
    expect(stage("cpu").image).toBe(stage("manifests").image);
    // CUDA 12.4 and later images named "-cudnn-" carry cuDNN 9
    expect(stage("cuda").image).toMatch(/^nvidia\/cuda:12\.([4-9]|\d\d)\.\d+-cudnn-runtime-ubuntu\d+\.\d+$/);
  });

  it("installs production dependencies with the right onnxruntime-node flavour in each variant", () => {
    const install = (name: string) => content(last(stage(name), "RUN"));
    expect(install("deps-cpu")).toMatch(/^ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev /);
    expect(install("deps-cuda")).toMatch(/^ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci --omit=dev /);
    for (const name of ["deps-cpu", "deps-cuda"]) {
      expect(install(name)).toContain("--workspace @twigserve/gpu-service");
      expect(install(name)).toContain("--workspace @twigserve/proto");
    }
    // each variant takes its own dependencies
    for (const [variant, deps] of [
      ["cpu", "deps-cpu"],
      ["cuda", "deps-cuda"],
    ]) {
      const copies = stage(variant).instructions.filter(
        (i) => i.getKeyword() === "COPY" && content(i).includes("node_modules"),
      );
      expect(copies.map(raw)).toEqual([`--from=${deps} /app/node_modules ./node_modules`]);
    }
    // tsx runs the TypeScript at run time: it must be a production dependency of the service
    const pkg = JSON.parse(readFileSync(join(repoRoot, "gpu-service/package.json"), "utf8"));
    expect(Object.keys(pkg.dependencies)).toContain("tsx");
  });

  it("runs as a numeric non-root user, starts Node directly, drains on SIGTERM, checks gRPC health", () => {
    let checked = 0;
    for (const name of ["cpu", "cuda"]) {
      const s = stage(name);
      const user = content(last(s, "USER"));
      const uid = Number(user.split(":")[0]);
      expect(Number.isInteger(uid) && uid > 0, `USER ${user}`).toBe(true);
      // nothing after USER switches back to root
      const afterUser = s.instructions.slice(s.instructions.indexOf(last(s, "USER") as Instruction) + 1);
      expect(afterUser.map((i) => i.getKeyword())).not.toContain("RUN");
      expect(content(last(s, "CMD"))).toBe('["node", "--import", "tsx", "gpu-service/src/main.ts"]');
      expect(last(s, "ENTRYPOINT")).toBeUndefined();
      expect(content(last(s, "STOPSIGNAL"))).toBe("SIGTERM");
      expect(content(last(s, "WORKDIR"))).toBe("/app");
      const health = content(last(s, "HEALTHCHECK"));
      expect(health).toMatch(/CMD \["node", "gpu-service\/src\/health-probe\.mjs"\]$/);
      expect(`/app/gpu-service/src/health-probe.mjs`).toBe(PROBE_SCRIPT);
      expect(content(last(s, "EXPOSE"))).toBe("50651 9464");
      const env = s.instructions
        .filter((i) => i.getKeyword() === "ENV")
        .map(content)
        .join(" ");
      expect(env).toMatch(/TWIG_MODELS_DIR=\/models\b/);
      expect(env).toMatch(new RegExp(`TWIG_EXECUTION_PROVIDER=${name}\\b`));
      // the image's environment is a configuration the service accepts, with /metrics reachable through -p
      const vars = Object.fromEntries(
        [...env.matchAll(/(TWIG_[A-Z_]+)=(\S+)/g)].filter(([, k]) => k !== "TWIG_MODELS_DIR").map(([, k, v]) => [k, v]),
      );
      const config = loadConfig({ ...vars, TWIG_SERVICE_TOKEN: "from-the-environment" });
      expect(config.host).toBe("0.0.0.0");
      const metricsHost = (config as { metricsHost?: string }).metricsHost ?? config.host;
      expect(metricsHost, "set TWIG_METRICS_HOST in the image's ENV").not.toMatch(/^(127\.|localhost$|::1$)/);
      checked++;
    }
    expect(checked).toBe(2);
    // the documented stop timeout outlasts the drain grace
    const drainMs = Number(/TWIG_DRAIN_GRACE_MS=(\d+)/.exec(text)?.[1]);
    const stopTimeout = Number(/--stop-timeout (\d+)/.exec(text)?.[1]);
    expect(stopTimeout * 1000).toBeGreaterThan(drainMs);
  });

  it("copies only files that exist in the build context and that .dockerignore keeps", () => {
    let checked = 0;
    for (const ins of dockerfile.getInstructions()) {
      if (ins.getKeyword() !== "COPY" || raw(ins).startsWith("--from=")) continue;
      const args = ins.getArguments().map((a) => a.getValue());
      for (const source of args.slice(0, -1)) {
        expect(existsSync(join(repoRoot, source)), `${source} exists`).toBe(true);
        expect(ignored(source), `${source} is not excluded by .dockerignore`).toBe(false);
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(12);
    for (const kept of ["models/demo/config.json", "edge/.dev.vars", "node_modules/tsx/package.json", ".git/HEAD"])
      expect(ignored(kept), `${kept} stays out of the context`).toBe(true);
  });
});
