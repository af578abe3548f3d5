#!/usr/bin/env bash
# Create .venv and install mimicache with its test tools, Ray (the Ray executor's tests) and
# the web UI. torch is pinned, and its build (CPU or CUDA) is picked by what the machine has:
# an unpinned torch from PyPI pulls a multi-GB CUDA build even where no GPU exists.
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
extras="test,plot,ray,ui"
index_args=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  build="CPU build (no NVIDIA GPU found: nvidia-smi is missing)"
  # no --index-url: this machine's configured pip index resolves torch to a CPU wheel
  [ -z "${MIMICACHE_TORCH_INDEX:-}" ] || index_args=(--index-url "$MIMICACHE_TORCH_INDEX")
elif ! nvidia-smi >/dev/null 2>&1; then
  build="CPU build (nvidia-smi is present but failed: no usable NVIDIA GPU or driver)"
  [ -z "${MIMICACHE_TORCH_INDEX:-}" ] || index_args=(--index-url "$MIMICACHE_TORCH_INDEX")
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
