#!/usr/bin/env python3
"""Generate the gRPC stubs of the KServe v2 / Triton protocol into frameserve.

    python scripts/generate_protos.py           # (re)write src/frameserve/api/grpc/generated/
    python scripts/generate_protos.py --check   # exit 1 if the checked-in stubs are stale

Inputs: src/frameserve/api/grpc/proto/{grpc_service,model_config,video_streams}.proto.
Outputs: grpc_service_pb2.py(.pyi), grpc_service_pb2_grpc.py, video_streams_pb2.py(.pyi),
video_streams_pb2_grpc.py and an __init__.py in src/frameserve/api/grpc/generated/;
model_config_pb2.py(.pyi) in src/frameserve/triton_pb/ (below every layer: serving/ reads
config.pbtxt with it, and serving must not import api/).

The protos are compiled with "-I proto/" so that the descriptors keep the file names
"grpc_service.proto" / "model_config.proto" that tritonclient uses: both sets of modules can
then be imported in one process (protobuf accepts a file added twice only when it is
byte-identical). protoc's top-level imports are rewritten afterwards: "import model_config_pb2"
to frameserve.triton_pb, the others to package-relative ones.

protoc comes from grpcio-tools. If the running interpreter has grpc_tools it is used; otherwise
grpcio-tools==GRPC_TOOLS_VERSION is installed into a throwaway virtualenv (never into the
project's environment). Its protoc (31.1) emits protobuf 6.31.1 gencode, which runs on any
protobuf 6.x runtime >= 6.31.1, and grpc stubs that need grpcio >= 1.75.1.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

GRPC_TOOLS_VERSION = "1.75.1"

ROOT = Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "src" / "frameserve" / "api" / "grpc"
PROTO_DIR = PKG_DIR / "proto"
OUT_DIR = PKG_DIR / "generated"
SHARED_DIR = ROOT / "src" / "frameserve" / "triton_pb"
PROTOS = ("grpc_service.proto", "model_config.proto", "video_streams.proto")
OUTPUTS = (
    "__init__.py",
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
    "video_streams_pb2.py",
    "video_streams_pb2.pyi",
    "video_streams_pb2_grpc.py",
)
SHARED_OUTPUTS = ("model_config_pb2.py", "model_config_pb2.pyi")  # in SHARED_DIR, next to its
# hand-written __init__.py
INIT = '''"""Generated gRPC stubs: KServe v2 / Triton (``inference``) and ours (``frameserve.v1``).

Do not edit: regenerate with ``python scripts/generate_protos.py`` from ../proto/*.proto.
"""
'''

# protoc writes top-level imports; point model_config_pb2 at frameserve.triton_pb and make the
# others relative to this package.
IMPORT_FIXES = (
    (
        re.compile(r"^import (model_config_pb2) as (\w+)$", re.M),
        r"from frameserve.triton_pb import \1 as \2",
    ),
    (re.compile(r"^import (\w+_pb2) as (\w+)$", re.M), r"from . import \1 as \2"),
)


def log(msg: str) -> None:
    sys.stderr.write(f"generate_protos: {msg}\n")


def protoc_python(workdir: Path) -> str:
    """An interpreter that can run ``-m grpc_tools.protoc``."""
    if importlib.util.find_spec("grpc_tools") is not None:
        return sys.executable
    env_dir = workdir / "grpc-tools-venv"
    log(f"no grpc_tools here; installing grpcio-tools=={GRPC_TOOLS_VERSION} into a temp venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"grpcio-tools=={GRPC_TOOLS_VERSION}",
        ],
        check=True,
    )
    return py


def generate(dest: Path, shared: Path, workdir: Path) -> None:
    py = protoc_python(workdir)
    version = subprocess.run(
        [py, "-m", "grpc_tools.protoc", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    log(f"using {version} ({py})")
    raw = workdir / "raw"
    raw.mkdir()
    subprocess.run(
        [
            py,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
            *PROTOS,
        ],
        check=True,
        cwd=PROTO_DIR,
    )
    dest.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS + SHARED_OUTPUTS:
        if name == "__init__.py":
            text = INIT
        else:
            text = (raw / name).read_text()
            for pattern, repl in IMPORT_FIXES:
                text = pattern.sub(repl, text)
        ((shared if name in SHARED_OUTPUTS else dest) / name).write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the checked-in stubs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="frameserve-protoc-") as tmp:
        work = Path(tmp)
        if not args.check:
            generate(OUT_DIR, SHARED_DIR, work)
            log(f"wrote {', '.join(OUTPUTS)} to {os.path.relpath(OUT_DIR, ROOT)}")
            log(f"wrote {', '.join(SHARED_OUTPUTS)} to {os.path.relpath(SHARED_DIR, ROOT)}")
            return 0
        fresh = work / "fresh"
        generate(fresh, fresh, work)
        pairs = [(n, OUT_DIR / n) for n in OUTPUTS] + [(n, SHARED_DIR / n) for n in SHARED_OUTPUTS]
        stale = [
            n
            for n, kept in pairs
            if not kept.is_file() or not filecmp.cmp(fresh / n, kept, shallow=False)
        ]
        if stale:
            log(f"out of date: {', '.join(stale)}; run scripts/generate_protos.py")
            return 1
        log("generated stubs are up to date")
        return 0


if __name__ == "__main__":
    sys.exit(main())
