#!/usr/bin/env bash
# Run the Wukong demo on this machine: creates .venv and installs the project if needed, then
# runs `wukong demo` (tree reduction + TSQR on an embedded Redis, checked against numpy).
# Extra arguments go to `wukong demo`, e.g. `bash scripts/demo.sh --workers 4 --json`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec "$VENV/bin/wukong" demo "$@"
