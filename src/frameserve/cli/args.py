"""argparse value types shared by the commands: each error says what was expected and got."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _parse(text: str, kind: type[int] | type[float], expected: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = int(_parse(text, int, "an integer >= 1"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_parse(text, int, "an integer >= 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _parse(text, float, "a number > 0")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _parse(text, float, "a number >= 0")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = _parse(text, float, "a number in 0..1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text}")
    return value


def port(text: str) -> int:
    value = int(_parse(text, int, "a port 0..65535"))
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


ENV_PREFIX = "FRAMESERVE_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def env_name(action: argparse.Action, prefix: str = ENV_PREFIX) -> str:
    """``--max-queued-jobs`` -> ``FRAMESERVE_MAX_QUEUED_JOBS``."""
    long = max(action.option_strings, key=len)
    return prefix + long.lstrip("-").replace("-", "_").upper()


class ServeHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default and the environment variable that sets it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        shown = "" if "default" in text.lower() else "default: %(default)s; "
        return f"{text} ({shown}env {env_name(action)})"


def _env_value(action: argparse.Action, text: str) -> object:
    if isinstance(action, argparse._StoreTrueAction):
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        return text.lower() in _TRUE
    convert = action.type if callable(action.type) else str
    items = [t.strip() for t in text.split(",") if t.strip()]
    values = [convert(t) for t in (items if isinstance(action, argparse._AppendAction) else [text])]
    if action.choices is not None:
        bad = [v for v in values if v not in action.choices]
        if bad:
            raise ValueError(f"expected one of {', '.join(map(str, action.choices))}")
    return values if isinstance(action, argparse._AppendAction) else values[0]


def apply_environment(parser: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    """Every flag of ``parser`` may also come from ``FRAMESERVE_<FLAG>`` (lists comma-separated,
    switches 1/0, true/false, yes/no, on/off); the command line wins. A bad value exits like a
    bad flag, naming the variable."""
    for action in parser._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS:
            continue
        name = env_name(action)
        if name not in environ:
            continue
        try:
            value = _env_value(action, environ[name])
        except (ValueError, argparse.ArgumentTypeError) as err:
            parser.error(f"environment variable {name}={environ[name]!r}: {err}")
        parser.set_defaults(**{action.dest: value})
