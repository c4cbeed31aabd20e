#!/usr/bin/env bash
# The engine on a CUDA GPU: parity with PyTorch, the lossless relations between modes, the GPU's
# tokens against the CPU's, and the real-path benchmark (`bench -- engine --model`), all with the
# CUDA execution provider. On a host without an NVIDIA GPU it says so and exits 0.
#
#   bash scripts/gpu-check.sh                      # uses (or writes) a 2048-wide, 16-layer model
#   TWIG_GPU_CHECK_MODEL=DIR bash scripts/gpu-check.sh
#
# Needs onnxruntime-node's CUDA binaries: ONNXRUNTIME_NODE_INSTALL=cuda12 npm install (CUDA 12, cuDNN 9).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu-check: no CUDA GPU on this host (nvidia-smi is missing or lists no GPU): skipped"
  exit 0
fi
nvidia-smi -L

ort_bin=$(ls -d node_modules/onnxruntime-node/bin/napi-v*/linux/x64 2>/dev/null | head -n 1)
if [ -z "$ort_bin" ] || [ ! -e "$ort_bin/libonnxruntime_providers_cuda.so" ]; then
  echo "gpu-check: onnxruntime-node has no CUDA provider (${ort_bin:-not installed}); install it with ONNXRUNTIME_NODE_INSTALL=cuda12 npm install" >&2
  exit 1
fi

twig() { npm run -s twig -- "$@"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/twig-gpu-check-XXXXXX")
trap 'rm -rf "$work"' EXIT

echo
echo "== parity with PyTorch's numbers on the GPU (models/demo)"
twig parity --provider cuda

echo
echo "== greedy tokens on the GPU: twig = ttp-only and ssd-only = base (lossless), and against the CPU's"
mismatch=0
checked=0
for image in training/data/test/0000.png training/data/test/0001.png training/data/test/0002.png; do
  for mode in base ssd-only ttp-only twig; do
    for provider in cpu cuda; do
      twig generate --image "$image" --prompt "describe the picture" --mode "$mode" --max-tokens 48 \
        --provider "$provider" --trace "$work/$(basename "$image" .png)-$mode-$provider.json" >/dev/null
    done
  done
  for provider in cpu cuda; do
    for pair in "twig ttp-only" "ssd-only base"; do
      set -- $pair
      a="$work/$(basename "$image" .png)-$1-$provider.json"
      b="$work/$(basename "$image" .png)-$2-$provider.json"
      if node -e 'const [a,b]=process.argv.slice(1).map(f=>JSON.parse(require("fs").readFileSync(f,"utf8")).outputIds.join(","));process.exit(a===b?0:1)' "$a" "$b"; then
        echo "  $image $provider: $1 = $2"
      else
        echo "  $image $provider: $1 != $2  (LOSSLESS BROKEN)"
        mismatch=$((mismatch + 1))
      fi
      checked=$((checked + 1))
    done
  done
  for mode in base twig; do
    a="$work/$(basename "$image" .png)-$mode-cpu.json"
    b="$work/$(basename "$image" .png)-$mode-cuda.json"
    if node -e 'const [a,b]=process.argv.slice(1).map(f=>JSON.parse(require("fs").readFileSync(f,"utf8")).outputIds.join(","));process.exit(a===b?0:1)' "$a" "$b"; then
      echo "  $image $mode: GPU tokens = CPU tokens"
    else
      echo "  $image $mode: GPU tokens differ from the CPU's (float order; parity above bounds the logits)"
    fi
  done
done
echo "  $checked lossless checks, $mismatch broken"
[ "$mismatch" -eq 0 ]

model=${TWIG_GPU_CHECK_MODEL:-$work/m2048}
if [ ! -e "$model/config.json" ]; then
  echo
  echo "== writing a 2048-wide, 16-layer random model (828M parameters) to $model"
  twig make-tiny --out "$model" --hidden 2048 --layers 16
fi
echo
echo "== the real path on the GPU (bandwidth floor rows are the host's memory, not the GPU's)"
npm run -s bench -- engine --model "$model" --provider cuda --contexts 200,600 --precision fp32,int4
