"""argparse value types shared by the commands: each error says what was expected and got."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text}")
    return value


def default_model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/frameserve/compiled``, or ``~/.cache/frameserve/compiled``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: ignore relative
    return base / "frameserve" / "compiled"


def add_model_cache(parser: argparse.ArgumentParser) -> None:
    """``--model-cache-dir`` / ``--no-model-cache``: the compiled-model cache (OpenVINO's
    ``CACHE_DIR``) for models whose config names no ``cache_dir``: a model compiled before
    loads from it in a fraction of the time."""
    parser.add_argument("--model-cache-dir", type=Path, default=None, metavar="DIR",
                        help="compiled models are cached here (default: "
                             "$XDG_CACHE_HOME/frameserve/compiled)")  # fmt: skip
    parser.add_argument("--no-model-cache", action="store_true",
                        help="compile every model at load, cache nothing")  # fmt: skip


def model_cache_dir(args: argparse.Namespace) -> Path | None:
    """The cache folder the flags ask for (None: no cache)."""
    if args.no_model_cache:
        return None
    return args.model_cache_dir or default_model_cache_dir()
