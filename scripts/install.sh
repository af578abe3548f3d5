#!/usr/bin/env bash
# Create .venv and install mimicache with its test tools, Ray (the Ray executor's tests), the
# web UI, pose-format (.pose export) and the docs tools (mkdocs). torch is pinned, and its
# build (CPU or CUDA) is picked by what the machine has: an unpinned torch from PyPI pulls a
# multi-GB CUDA build even where no GPU exists.
# Usage: bash scripts/install.sh [--dry-run]   (--dry-run prints the steps without running them)
# MIMICACHE_TORCH_VERSION pins another torch; MIMICACHE_TORCH_INDEX overrides the wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=1 ;;
  *) echo "install.sh: unknown argument '$1' (the only option is --dry-run)" >&2; exit 2 ;;
esac

run() {
  echo "  \$ $*"
  [ "$dry_run" = 1 ] || "$@"
}

ver="${MIMICACHE_TORCH_VERSION:-2.13.0}"
extras="test,plot,ray,ui,s3,pose,docs"
index_args=()
# The CPU wheels: from PyTorch's CPU index, unless MIMICACHE_TORCH_INDEX names another or pip
# is set up with its own index or wheel folder (a mirror, an offline wheelhouse), which decides.
cpu_index() {
  if [ -n "${MIMICACHE_TORCH_INDEX:-}" ]; then
    index_args=(--index-url "$MIMICACHE_TORCH_INDEX")
  elif [ -n "${PIP_INDEX_URL:-}${PIP_EXTRA_INDEX_URL:-}${PIP_FIND_LINKS:-}" ] ||
    python3 -m pip config list 2>/dev/null | grep -qE "index-url|find-links"; then
    echo "  (pip's configured index or wheel folder provides torch)"
  else
    index_args=(--index-url https://download.pytorch.org/whl/cpu)
  fi
}
if ! command -v nvidia-smi >/dev/null 2>&1; then
  build="CPU build (no NVIDIA GPU found: nvidia-smi is missing)"
  cpu_index
elif ! nvidia-smi >/dev/null 2>&1; then
  build="CPU build (nvidia-smi is present but failed: no usable NVIDIA GPU or driver)"
  cpu_index
else
  build="CUDA build (nvidia-smi found a GPU)"
  index_args=(--index-url "${MIMICACHE_TORCH_INDEX:-https://download.pytorch.org/whl/cu126}")
  extras="$extras,gpu"  # onnxruntime-gpu: DWPose on CUDA
fi
echo "torch $ver: $build"

echo "[1/3] creating .venv"
if [ -x .venv/bin/python ]; then
  echo "  .venv exists, kept"
else
  run python3 -m venv .venv
fi
run .venv/bin/python -m pip install --quiet --upgrade pip
echo "[2/3] installing torch $ver"
run .venv/bin/python -m pip install --quiet "torch==$ver" "${index_args[@]}"
echo "[3/3] installing mimicache with extras [$extras]"
run .venv/bin/python -m pip install --quiet -e ".[$extras]"
echo "done: activate with '. .venv/bin/activate', then run 'mimicache demo'"
