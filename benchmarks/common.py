"""Helpers every benchmark uses: machine facts and loopback ports.

Each benchmark's ``run.py`` puts this folder on ``sys.path`` before importing its modules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

LOOPBACK = "127.0.0.1"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--exclude", "*"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def free_port() -> int:
    """A TCP port on the loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def write_latest(out: Path, data: object, table: str, indent: int = 2) -> None:
    """``out/latest.json`` (every raw record) and ``out/latest.md`` (the tables); prints them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(data, indent=indent))
    (out / "latest.md").write_text(table)
    print(table)  # noqa: T201


def run_checked(cmd: list[str], timeout: float) -> str:
    """Run a command; its stdout, or RuntimeError with the tail of its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def ensure_venv(
    venv: Path,
    requirements: Path,
    what: str,
    log: Callable[[str], object] = sys.stderr.write,
    timeout_s: float = 1200,
) -> Path:
    """A pinned virtual environment of a comparison contender (its Python): created when
    missing, re-installed when ``requirements`` changed (a stamp holds their sha256)."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not (python.is_file() and stamp.is_file() and stamp.read_text().strip() == digest):
        log(f"creating {venv} (pinned {what} environment; takes a minute)\n")
        run_checked([sys.executable, "-m", "venv", "--clear", str(venv)], 300)
        run_checked([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                     "-r", str(requirements)], timeout_s)  # fmt: skip
        stamp.write_text(digest + "\n")
    return python


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>/run.py`` as a module, by path (every benchmark's file is run.py):
    another benchmark reuses its server, counters and limits."""
    path = Path(__file__).resolve().parent / name / "run.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
