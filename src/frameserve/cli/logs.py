"""Structured logging for the CLI: one JSON object per line, or plain text on a terminal.

Each record carries the request, trace, job or stream id of the work that wrote it
(``frameserve.logcontext``): as fields in JSON, as ``key=value`` after the message in text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from frameserve import logcontext

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
LOG_FORMATS = ("auto", "json", "text")


class ContextFilter(logging.Filter):
    """Puts the ids set in ``frameserve.logcontext`` on each record (fields set by an explicit
    ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in logcontext.current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` with the record's context ids."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [f"{k}={getattr(record, k)}" for k in logcontext.FIELDS if hasattr(record, k)]
        if not ids:
            return text
        head, sep, rest = text.partition("\n")  # after the message, before a traceback
        return f"{head} {' '.join(ids)}{sep}{rest}"


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto``: text when ``stream`` is a terminal (a person reads it), JSON otherwise (a
    collector does)."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(level: str = "info", fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if resolve_format(fmt, sys.stderr) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.error").setLevel("WARNING")
