#!/usr/bin/env bash
# Fresh machine to a finished demo: install (if needed), then `mimicache demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mimicache ] || bash scripts/install.sh
HF_HUB_OFFLINE=1 exec .venv/bin/mimicache demo "$@"
