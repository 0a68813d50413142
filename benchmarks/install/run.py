"""The package as users install it: installed size with and without extras, and start-up time.

    .venv/bin/python benchmarks/install/run.py [--repeats 5] [--variants plain toolkit ...]

Builds the wheel, installs it into a fresh virtualenv per variant (the plain install, each extra,
all of them) at the lock's pins (``-c requirements.lock``; the runtime wheels come from
``.wheels`` when ``make wheelhouse`` made it, the rest from the index or pip's cache), and
reports each virtualenv's size beyond an empty one. Then, from the plain install, the time from
starting ``frameserve serve`` to ``/v2/health/ready`` answering 200, on the example repository
(two models) and on ``./models`` (the zoo, compiled-model cache warm), medians over repeats; and
``frameserve --version`` (the CLI's import cost). Writes ``results/latest.md``/``latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

from common import cpu_model, free_port, git_commit, run_checked, write_latest

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "plain": "",
    "toolkit": "[toolkit]",
    "tracing": "[tracing]",
    "ray": "[ray]",
    "all extras": "[toolkit,tracing,ray]",
}


def _run(argv: list[str]) -> str:
    return run_checked(argv, timeout=900)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _venv(folder: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(folder)])
    return folder


def _constraints(tmp: Path) -> Path:
    """The lock's pins without its hashes (hashes in a constraints file make pip require them
    for the wheel built here too)."""
    pins = re.findall(
        r"^([A-Za-z0-9_.\-\[\]]+==\S+)", (ROOT / "requirements.lock").read_text(), re.M
    )
    path = tmp / "constraints.txt"
    path.write_text("\n".join(p for p in pins if "[" not in p) + "\n")
    return path


def _install(venv: Path, wheel: Path, extras: str) -> None:
    python = str(venv / "bin" / "python")
    constraints = _constraints(venv.parent)
    args = [python, "-m", "pip", "install", "-q", "-c", str(constraints)]
    if (ROOT / ".wheels").is_dir():
        args += ["--find-links", str(ROOT / ".wheels")]
    _run([*args, f"{wheel}{extras}"])


def sizes(wheel: Path, variants: list[str], tmp: Path) -> list[dict[str, object]]:
    base = _size(_venv(tmp / "empty"))
    rows: list[dict[str, object]] = []
    for name in variants:
        venv = _venv(tmp / name.replace(" ", "-"))
        t0 = time.monotonic()
        _install(venv, wheel, VARIANTS[name])
        listed = json.loads(
            _run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"])
        )
        mb = (_size(venv) - base) / 2**20
        rows.append(
            {"variant": name, "extras": VARIANTS[name], "mb": round(mb, 1),
             "packages": len(listed) - 1, "install_s": round(time.monotonic() - t0, 1)}
        )  # fmt: skip
        print(f"{name:11} {mb:7.1f} MB  {len(listed) - 1} packages")  # noqa: T201
    dev = ROOT / ".venv"
    if dev.is_dir():  # what `make setup` installs, for comparison
        rows.append({"variant": "make setup's .venv (dev tools, test references)", "extras": "",
                     "mb": round((_size(dev) - base) / 2**20, 1), "packages": "-",
                     "install_s": "-"})  # fmt: skip
    return rows


def largest(venv: Path, n: int = 8) -> list[dict[str, object]]:
    """The plain install's largest top-level folders in site-packages."""
    (site,) = (venv / "lib").glob("python3*/site-packages")
    folders = [p for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")]
    sized = sorted(((_size(p), p.name) for p in folders), reverse=True)[:n]
    return [{"package": name, "mb": round(size / 2**20, 1)} for size, name in sized]


def _ready_after(frameserve: Path, repository: Path, cwd: Path) -> float:
    http, grpc = free_port(), free_port()
    argv = [str(frameserve), "serve", "--repository", str(repository),
            "--http-port", str(http), "--grpc-port", str(grpc)]  # fmt: skip
    t0 = time.monotonic()
    with open(cwd / "serve.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=log)
    try:
        while time.monotonic() - t0 < 120:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}; see {cwd}/serve.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1):
                    return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                time.sleep(0.01)
        raise TimeoutError("not ready after 120 s")
    finally:
        proc.terminate()
        proc.wait(60)


def startup(venv: Path, repeats: int, tmp: Path) -> list[dict[str, object]]:
    frameserve = venv / "bin" / "frameserve"
    examples = tmp / "examples"
    _run([str(frameserve), "zoo", "examples", "--dest", str(examples)])
    rows: list[dict[str, object]] = []
    t = []
    for _ in range(repeats):
        t0 = time.monotonic()
        _run([str(frameserve), "--version"])
        t.append(time.monotonic() - t0)
    rows.append({"what": "frameserve --version", "median_s": round(statistics.median(t), 2)})
    repos = [("example repository (convnet, matmul)", examples)]
    if (ROOT / "models").is_dir():
        repos.append(("./models (zoo + examples, cache warm)", ROOT / "models"))
    for label, repo in repos:
        _ready_after(frameserve, repo, tmp)  # warms the compiled-model cache and the page cache
        times = [_ready_after(frameserve, repo, tmp) for _ in range(repeats)]
        med = statistics.median(times)
        rows.append({"what": f"serve to ready: {label}", "median_s": round(med, 2),
                     "min_s": round(min(times), 2), "max_s": round(max(times), 2)})  # fmt: skip
        print(f"{label}: ready after {med:.2f} s (median of {repeats})")  # noqa: T201
    return rows


def _table(
    size_rows: list[dict[str, object]],
    start_rows: list[dict[str, object]],
    big: list[dict[str, object]],
) -> str:
    lines = [
        "# Installing the package",
        "",
        f"`benchmarks/install/run.py` at {git_commit(ROOT)} on {cpu_model()}, "
        f"{time.strftime('%Y-%m-%d')}. Sizes: a fresh virtualenv with the wheel installed at the "
        "lock's pins, minus an empty one with pip.",
        "",
        "| install | extras | size MB | packages | install s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in size_rows:
        lines.append(
            f"| {r['variant']} | `{r['extras'] or '-'}` | {r['mb']} | {r['packages']} "
            f"| {r['install_s']} |"
        )
    lines += [
        "",
        "Largest in the plain install: " + ", ".join(f"{b['package']} {b['mb']} MB" for b in big),
    ]
    lines += ["", "| start-up (plain install) | median s | min s | max s |", "|---|---:|---:|---:|"]
    for r in start_rows:
        lines.append(
            f"| {r['what']} | {r['median_s']} | {r.get('min_s', '-')} | {r.get('max_s', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="frameserve-install-") as name:
        tmp = Path(name)
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
        os.environ.clear()
        os.environ.update(env)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
              "-w", str(tmp / "dist"), str(ROOT)])  # fmt: skip
        (wheel,) = (tmp / "dist").glob("frameserve-*.whl")
        size_rows = sizes(wheel, args.variants, tmp)
        plain = tmp / "plain"
        if not plain.exists():
            plain = _venv(plain)
            _install(plain, wheel, "")
        start_rows = startup(plain, args.repeats, tmp)
        big = largest(plain)
    table = _table(size_rows, start_rows, big)
    write_latest(args.out, {"sizes": size_rows, "startup": start_rows, "largest": big}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
