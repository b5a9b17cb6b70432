"""`import wukong` is lazy (PEP 562): the Lambda handlers load only what they run, never the local
runtime, the progress bar or the HTTP service's models; the public names still resolve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what no Lambda handler needs: the local runtime, the progress bar, the job API's models and app
LOCAL_ONLY = ("wukong.local", "wukong.client", "wukong.service", "tqdm", "fastapi", "uvicorn")


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("function", ["executor", "invoker", "finalizer", "planner", "waiter", "executor_failed"])
def test_a_lambda_handler_loads_no_local_runtime_or_progress_bar(function):
    handler = ROOT / "functions" / function / "handler.py"
    loaded = loaded_after(f"import runpy; runpy.run_path({str(handler)!r})")
    assert "wukong.executor" in loaded or function != "executor"
    assert not {m for m in loaded if m.split(".")[0] in LOCAL_ONLY or m.startswith(LOCAL_ONLY)}


def test_the_package_alone_loads_almost_nothing_and_every_public_name_resolves():
    assert not {m for m in loaded_after("import wukong") if m.startswith(("wukong.", "dask", "redis"))}
    import wukong
    for name in wukong.__all__:
        assert getattr(wukong, name).__name__ == name
    assert set(wukong.__all__) <= set(dir(wukong))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wukong.nope  # noqa: B018
    from wukong import Client, LocalCluster  # the seed's import
    assert Client.__module__ == "wukong.client" and LocalCluster.__module__ == "wukong.local.cluster"
