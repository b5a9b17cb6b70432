# Sourced by demo.sh and test.sh (from the repo root): make sure .venv exists and holds this
# checkout's wukong with its test extras. A stamp file records what was installed, so a second
# run skips pip entirely unless pyproject.toml (or the Python) changed.

PYTHON="${PYTHON:-python3}"
VENV="${WUKONG_VENV:-.venv}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "scripts: $PYTHON not found; install Python 3.11 or newer (or set PYTHON=/path/to/python3)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "scripts: wukong needs Python >= 3.11, $PYTHON is $("$PYTHON" -V 2>&1)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "scripts: creating $VENV with $("$PYTHON" -V 2>&1)" >&2
    if ! "$PYTHON" -m venv "$VENV"; then
        echo "scripts: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
        exit 1
    fi
fi

stamp="$VENV/.wukong-install-stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$VENV/bin/python" -V 2>&1) [test]"
# find_spec does not import wukong (and dask); it only checks the install points at this checkout
installed_here() {
    "$VENV/bin/python" - "$PWD/shared/wukong" <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("wukong")
ok = spec is not None and os.path.dirname(os.path.realpath(spec.origin)) == os.path.realpath(sys.argv[1])
sys.exit(0 if ok else 1)
PY
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! installed_here; then
    echo "scripts: installing wukong and its test dependencies into $VENV (pip, a few minutes the first time)" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
