#!/usr/bin/env bash
# Create .venv and install mimicache with its test tools, Ray (the Ray executor's tests) and
# the web UI. torch is pinned to the CPU build
# (an unpinned torch pulls a multi-GB CUDA build); see README for CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${MIMICACHE_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[test,plot,ray,ui]"
