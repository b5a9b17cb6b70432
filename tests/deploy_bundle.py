"""The deployment as the tests see it: `serverless package` run offline once per test session, the
zip bundle unpacked, the executor image's contents installed without Docker, and the Python that
runs them in isolation (the Lambda runtime's version).

Used by tests/test_deploy_package.py (the template) and tests/aws/ (handlers run from the bundle).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE, REGION = "ci", "us-east-1"
#: what Lambda's Python runtime has in /var/runtime and serverless.yml's noDeploy therefore
#: leaves out of the zip; the isolated runtime gets the development venv's copies of these only
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath")
#: Lambda's limit on a function's unzipped code, layers included (250 MB)
LAMBDA_UNZIPPED_LIMIT = 262_144_000
IMAGE_DIR = ROOT / "deploy" / "executor-image"
#: the functions that unpickle user objects (graph, task values, results) and so run from the
#: image when functionPackage=image; deploy/function-package.js names the same three
IMAGE_FUNCTIONS = ("planner", "executor", "finalizer")
#: Amazon Linux 2023 (Lambda's Python 3.12+ runtimes and base images) has glibc 2.34
LAMBDA_GLIBC_MINOR = 34


def serverless_env() -> dict[str, str]:
    """No real credentials, no profile, no telemetry: packaging must work on a bare machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env.update(
        AWS_ACCESS_KEY_ID="wukong-offline-packaging",
        AWS_SECRET_ACCESS_KEY="wukong-offline-packaging",
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        SLS_TELEMETRY_DISABLED="1",
        SLS_TRACKING_DISABLED="1",
        SLS_NOTIFICATIONS_MODE="off",
        SLS_INTERACTIVE_SETUP_DISABLE="1",
        CI=env.get("CI", "true"),
    )
    return env


def skip_or_fail(reason: str):
    """Outside CI a missing tool skips the test; under CI=true it fails, so CI never passes by skipping."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def cache_dir() -> Path:
    """Where packaging caches wheels and installs across runs and clones (deploy/packaging.js
    reads the same variables)."""
    base = os.environ.get("WUKONG_SLS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wukong-serverless"
    return Path(base)


@contextlib.contextmanager
def exclusive(*directories: Path):
    """Hold an exclusive lock on each directory for the block. Packagings of one service folder
    (node_modules, .serverless/) and of one cache overwrite each other's files, and the README's
    test command runs two pytest-xdist workers, so whatever writes there runs one at a time."""
    with contextlib.ExitStack() as stack:
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory, os.O_RDONLY)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield


def ensure_node_modules() -> Path:
    """`npm ci` unless node_modules was installed from this very package-lock.json."""
    npm = shutil.which("npm")
    if npm is None:
        skip_or_fail("npm is not on PATH; packaging needs Node.js 20 and npm")
    lock = hashlib.sha256((ROOT / "package-lock.json").read_bytes()).hexdigest()
    stamp = ROOT / "node_modules" / ".wukong-lock-sha256"
    binary = ROOT / "node_modules" / ".bin" / "serverless"
    if not binary.exists() or not stamp.exists() or stamp.read_text().strip() != lock:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT,
                       env=serverless_env(), check=True, timeout=600)
        stamp.write_text(lock + "\n")
    return binary


def run_serverless(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    with exclusive(ROOT, cache_dir()):
        binary = ensure_node_modules()
        return subprocess.run([str(binary), *args, "--stage", STAGE, "--region", REGION], cwd=ROOT,
                              env=serverless_env(), capture_output=True, text=True, timeout=timeout)


def package(out: Path, *params: str) -> dict:
    proc = run_serverless("package", "--package", str(out), *(f"--param={p}" for p in params))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "cloudformation-template-update-stack.json").read_text())


_packaged: dict[str, tuple[dict, Path]] = {}


def packaged_default(tmp_path_factory) -> tuple[dict, Path]:
    """(template, output folder) of the default parameters, packaged once per test session whichever
    test directory asks first (pytest's session fixtures are per conftest, this cache is per process).
    Under pytest-xdist the workers share one packaging, in their common base folder (per run)."""
    if "default" not in _packaged:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            out = tmp_path_factory.getbasetemp().parent / "sls-package-default"
            with exclusive(out):
                done = out / ".complete"
                template = json.loads((out / "cloudformation-template-update-stack.json").read_text()) \
                    if done.exists() else package(out)
                done.touch()
        else:
            out = tmp_path_factory.mktemp("sls-package")
            template = package(out)
        _packaged["default"] = (template, out)
    return _packaged["default"]


def unzipped_size(archive: Path) -> int:
    return sum(info.file_size for info in zipfile.ZipFile(archive).infolist())


# --- the isolated runtime ----------------------------------------------------------------------

def lambda_python(version: str) -> Path:
    """An interpreter of the Lambda runtime's version (the bundle's wheels are built for it):
    $WUKONG_LAMBDA_PYTHON, else python<version> on PATH, else a pyenv install of it."""
    candidates = [os.environ.get("WUKONG_LAMBDA_PYTHON"), shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv_root / "versions" / f"{version}.*" / "bin" / f"python{version}")),
                         reverse=True)
    for candidate in filter(None, candidates):
        # a pyenv shim exists even when the version is not selected, so ask the interpreter itself
        try:
            proc = subprocess.run([candidate, "-I", "-S", "-c", "import sys; print(sys.version_info[:2] == "
                                   f"{tuple(map(int, version.split('.')))}, sys.executable)"],
                                  capture_output=True, text=True, timeout=60)
        except OSError:  # e.g. WUKONG_LAMBDA_PYTHON names no file
            continue
        ok, _, executable = proc.stdout.strip().partition(" ")
        if proc.returncode == 0 and ok == "True":
            return Path(executable)
    skip_or_fail(f"no Python {version} (Lambda's runtime) found: set WUKONG_LAMBDA_PYTHON, put python{version} "
                 "on PATH, or install it with pyenv")


def runtime_layer(into: Path) -> Path:
    """A stand-in for Lambda's /var/runtime: links to the development venv's boto3 and its
    siblings (pure Python), nothing else of the venv."""
    into.mkdir(parents=True, exist_ok=True)
    for name in LAMBDA_RUNTIME_PACKAGES:
        module = __import__(name)
        source = Path(module.__file__)
        source = source.parent if source.name == "__init__.py" else source
        link = into / source.name
        if not link.exists():
            link.symlink_to(source)
    return into


@dataclass(frozen=True)
class FunctionCode:
    """Code as Lambda would run it: the task root (/var/task), the sys.path entries the function's
    PYTHONPATH gives, with /var/task and /var/runtime mapped here, and the interpreter."""

    task_root: Path
    path: tuple[Path, ...]
    python: Path


def function_code(task_root: Path, pythonpath: str, python: Path, runtime: Path) -> FunctionCode:
    mapped = []
    for entry in pythonpath.split(":"):
        if entry == "/var/runtime":
            mapped.append(runtime)
        elif entry == "/var/task" or entry.startswith("/var/task/"):
            mapped.append(task_root / entry[len("/var/task/"):])
        else:
            raise AssertionError(f"PYTHONPATH entry {entry!r} is outside /var/task and /var/runtime")
    # Lambda puts the task root first, then PYTHONPATH
    return FunctionCode(task_root, (task_root, *mapped), python)


_unpacked: dict[str, FunctionCode] = {}


def zip_code(tmp_path_factory) -> FunctionCode:
    """The packaged zip bundle, unpacked once per session, with the executor's PYTHONPATH."""
    if "zip" not in _unpacked:
        template, out = packaged_default(tmp_path_factory)
        executor = template["Resources"]["ExecutorLambdaFunction"]["Properties"]
        python = lambda_python(executor["Runtime"].removeprefix("python"))
        root = tmp_path_factory.mktemp("lambda-task-root")
        zipfile.ZipFile(out / "wukong.zip").extractall(root)
        runtime = runtime_layer(tmp_path_factory.mktemp("lambda-runtime"))
        _unpacked["zip"] = function_code(root, executor["Environment"]["Variables"]["PYTHONPATH"], python, runtime)
    return _unpacked["zip"]


# --- the executor image, installed without Docker ---------------------------------------------

def dockerfile_requirements() -> list[Path]:
    """The requirement files the Dockerfile's pip install reads, as repository paths."""
    text = (IMAGE_DIR / "Dockerfile").read_text()
    copied = dict((dest, src) for src, dest in re.findall(r"^COPY (\S+) (/tmp/\S+\.txt)$", text, re.M))
    (pip_line,) = [line for line in text.splitlines() if "pip install" in line]
    return [ROOT / copied[dest] for dest in re.findall(r"-r (\S+)", pip_line)]


def image_pip_args(python_version: str) -> list[str]:
    """The Dockerfile's pip runs on the base image (Amazon Linux 2023, x86_64) and takes only
    wheels; from here pip gets the same wheels by naming that platform."""
    tags = ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(17, LAMBDA_GLIBC_MINOR + 1)]
    return [*(a for tag in tags for a in ("--platform", tag)), "--python-version", python_version,
            "--implementation", "cp", "--only-binary=:all:"]


def image_code(tmp_path_factory) -> FunctionCode:
    """What deploy/executor-image/Dockerfile puts in /var/task: its requirement files installed for
    the image's platform (cached by their content, like the zip's wheels), minus what the Dockerfile
    removes, plus the handlers and the wukong package. Only the image's Python packages can be
    checked this way, not the base image or the build itself (no Docker engine here)."""
    if "image" in _unpacked:
        return _unpacked["image"]
    template, _ = packaged_default(tmp_path_factory)
    executor = template["Resources"]["ExecutorLambdaFunction"]["Properties"]
    # the Dockerfile's base image follows the runtime (PYTHON_VERSION, deploy/packaging.js)
    python_version = executor["Runtime"].removeprefix("python")
    requirements = dockerfile_requirements()
    args = image_pip_args(python_version)
    key = hashlib.sha256(json.dumps([args, *map(requirement_lines, requirements)]).encode()).hexdigest()[:16]
    cache = cache_dir() / f"image-site-{key}"
    with exclusive(cache_dir()):
        if not (cache / ".complete").exists():
            for stale in cache.parent.glob("image-site-*"):  # ~850 MB each: keep only the current one
                shutil.rmtree(stale, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--target", str(cache), *args, *(a for p in requirements for a in ("-r", str(p)))],
                           check=True, timeout=900)
            (cache / ".complete").write_text(key + "\n")
    root = tmp_path_factory.mktemp("image-task-root")
    removed = dockerfile_removals()
    for entry in cache.iterdir():
        if not entry.name.startswith(removed):
            (root / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "functions", root / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "shared" / "wukong", root / "shared" / "wukong", ignore=shutil.ignore_patterns("__pycache__"))
    pythonpath = executor["Environment"]["Variables"]["PYTHONPATH"]
    runtime = runtime_layer(tmp_path_factory.mktemp("image-runtime"))
    _unpacked["image"] = function_code(root, pythonpath, lambda_python(python_version), runtime)
    return _unpacked["image"]


def requirement_lines(path: Path) -> list[str]:
    """A requirements file without its comments and blank lines: what pip acts on."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def dockerfile_removals() -> tuple[str, ...]:
    """The name prefixes the Dockerfile deletes after pip (its `rm -rf "${LAMBDA_TASK_ROOT}"/X*`)."""
    text = (IMAGE_DIR / "Dockerfile").read_text()
    return tuple(re.findall(r'"\$\{LAMBDA_TASK_ROOT\}"/(\S+?)\*', text))
