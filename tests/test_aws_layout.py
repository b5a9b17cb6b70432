"""The AWS layout stays consistent: serverless.yml names handlers that exist, and requirements.txt
keeps up with pyproject.toml. The functions and the state machine are tested in tests/aws/.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load(relative: str) -> ModuleType:
    """Import a Lambda handler file the way Lambda does: by path, not as part of a package."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"handler_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serverless_names_existing_handlers():
    # the rendered template (runtime, environment, ...) is checked in tests/test_deploy_package.py
    text = (ROOT / "serverless.yml").read_text()
    for handler in re.findall(r"handler: (\S+)", text):
        file, _, function = handler.rpartition(".")
        assert hasattr(load(file + ".py"), function), handler


def test_requirements_cover_the_package_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = {line for line in lines if line}
    assert set(deps) <= requirements
    names = {re.split(r"[\[<>=]", line)[0] for line in requirements}
    assert {"boto3", "aws-lambda-powertools"} <= names
