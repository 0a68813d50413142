"""``params``: what a client gives a pipeline's script models per stream (``configure``).

A JSON object of settings (a threshold, a region), sent with a job (``POST /v1/jobs``), a
live stream (``POST /v1/streams``) or ``video run --params JSON|@FILE``. Checked here for
shape and size only; what the values mean is the script's to check (``video.script_streams``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from frameserve.errors import InvalidInput

MAX_PARAMS_BYTES = 64 * 1024  # settings, not data


def check_params_size(params: dict[str, Any]) -> None:
    """``ValueError`` (a pydantic field validator's error) when ``params`` is no JSON object
    of at most ``MAX_PARAMS_BYTES``."""
    try:
        size = len(json.dumps(params, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"expected a JSON object, got one that is not: {err}") from None
    if size > MAX_PARAMS_BYTES:
        raise ValueError(f"expected at most {MAX_PARAMS_BYTES} bytes as JSON, got {size}")


def _checked(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is not None:
        check_params_size(params)
    return params


ScriptParams = Annotated[dict[str, Any] | None, AfterValidator(_checked)]
"""The ``params`` field of job and stream requests: a JSON object of bounded size, or none."""


def read_params(text: str) -> dict[str, Any]:
    """``--params JSON`` or ``--params @FILE`` (a JSON file) of ``video run``."""
    source = "--params"
    if text.startswith("@"):
        source = f"--params {text}"
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as err:
            raise InvalidInput(f"{source}: cannot read the file: {err.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{source}: expected a JSON object, not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{source}: expected a JSON object, got {type(value).__name__}")
    try:
        check_params_size(value)
    except ValueError as err:
        raise InvalidInput(f"{source}: {err}") from None
    return value
