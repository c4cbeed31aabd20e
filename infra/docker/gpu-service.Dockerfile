# syntax=docker/dockerfile:1
#
# The GPU service image, in two variants built from the repository root:
#
#   docker build -f infra/docker/gpu-service.Dockerfile --target cpu  -t twigserve-gpu:cpu  .
#   docker build -f infra/docker/gpu-service.Dockerfile --target cuda -t twigserve-gpu:cuda .
#
# cpu:  Node on Debian; ONNX Runtime's CPU provider (bundled with onnxruntime-node).
# cuda: the same application on NVIDIA's CUDA 12 runtime image with cuDNN 9, and
#       onnxruntime-node's CUDA 12 provider fetched at install time
#       (ONNXRUNTIME_NODE_INSTALL=cuda12). The host needs the NVIDIA driver and the
#       container toolkit (docker run --gpus all).
#
# Both run as an unprivileged user (uid 10001) and hold no model: mount the models
# directory read-only at /models (one sub-directory per model, see the README). Graphs
# too large for one protobuf message are cached under /cache (give it a volume).
#
#   docker run --rm --stop-timeout 45 -p 50651:50651 -p 9464:9464 \
#     -v /srv/twigserve/models:/models:ro -v twigserve-cache:/cache \
#     -e TWIG_SERVICE_TOKEN=... twigserve-gpu:cpu
#
# --stop-timeout must exceed TWIG_DRAIN_GRACE_MS (30 s here): on SIGTERM the service
# refuses new work and lets streams finish for that long; docker's default of 10 s
# would cut them off. The health check asks grpc.health.v1.Health through
# gpu-service/src/health-probe.mjs (plain Node, nothing vendored).

# ---- dependencies: manifests first, so that a source change does not reinstall ----
FROM node:20.20.2-bookworm-slim AS manifests
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# every workspace's manifest: npm ci checks the lockfile against all of them
COPY proto/package.json proto/
COPY gpu-service/package.json gpu-service/
COPY edge/package.json edge/
COPY test/package.json test/
COPY infra/package.json infra/

FROM manifests AS deps-cpu
# the environment wins over .npmrc; skip: onnxruntime-node's bundled CPU provider only
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund \
      --workspace @twigserve/gpu-service --workspace @twigserve/proto \
    && npm cache clean --force

FROM manifests AS deps-cuda
# cuda12: onnxruntime-node's install script fetches its CUDA 12 execution provider
RUN ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci --omit=dev --no-audit --no-fund \
      --workspace @twigserve/gpu-service --workspace @twigserve/proto \
    && npm cache clean --force

# ---- CPU variant ----
FROM node:20.20.2-bookworm-slim AS cpu
ENV NODE_ENV=production \
    TWIG_GPU_HOST=0.0.0.0 \
    TWIG_GPU_PORT=50651 \
    TWIG_METRICS_HOST=0.0.0.0 \
    TWIG_METRICS_PORT=9464 \
    TWIG_MODELS_DIR=/models \
    TWIG_GRAPH_CACHE_DIR=/cache/graphs \
    TWIG_DRAIN_GRACE_MS=30000 \
    TWIG_EXECUTION_PROVIDER=cpu
RUN groupadd --system --gid 10001 twig \
    && useradd --system --uid 10001 --gid twig --no-create-home --shell /usr/sbin/nologin twig \
    && mkdir -p /models /cache/graphs \
    && chown twig:twig /cache /cache/graphs
WORKDIR /app
COPY --from=deps-cpu /app/node_modules ./node_modules
COPY package.json tsconfig.json tsconfig.base.json ./
COPY proto/package.json proto/
COPY proto/gen proto/gen
COPY gpu-service/package.json gpu-service/
COPY gpu-service/src gpu-service/src
USER 10001:10001
EXPOSE 50651 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10m --retries=3 \
  CMD ["node", "gpu-service/src/health-probe.mjs"]
CMD ["node", "--import", "tsx", "gpu-service/src/main.ts"]

# ---- CUDA variant ----
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS cuda
ENV NODE_ENV=production \
    TWIG_GPU_HOST=0.0.0.0 \
    TWIG_GPU_PORT=50651 \
    TWIG_METRICS_HOST=0.0.0.0 \
    TWIG_METRICS_PORT=9464 \
    TWIG_MODELS_DIR=/models \
    TWIG_GRAPH_CACHE_DIR=/cache/graphs \
    TWIG_DRAIN_GRACE_MS=30000 \
    TWIG_EXECUTION_PROVIDER=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Node itself comes from the official image (same release as the CPU variant)
COPY --from=manifests /usr/local/bin/node /usr/local/bin/node
RUN groupadd --system --gid 10001 twig \
    && useradd --system --uid 10001 --gid twig --no-create-home --shell /usr/sbin/nologin twig \
    && mkdir -p /models /cache/graphs \
    && chown twig:twig /cache /cache/graphs
WORKDIR /app
COPY --from=deps-cuda /app/node_modules ./node_modules
COPY package.json tsconfig.json tsconfig.base.json ./
COPY proto/package.json proto/
COPY proto/gen proto/gen
COPY gpu-service/package.json gpu-service/
COPY gpu-service/src gpu-service/src
USER 10001:10001
EXPOSE 50651 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=15m --retries=3 \
  CMD ["node", "gpu-service/src/health-probe.mjs"]
CMD ["node", "--import", "tsx", "gpu-service/src/main.ts"]
