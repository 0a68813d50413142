"""Log lines carry the request, trace, job or stream id of the work that wrote them."""

from __future__ import annotations

import io
import json
import logging
import threading

from frameserve import logcontext
from frameserve.cli.logs import ContextFilter, JsonFormatter, TextFormatter, resolve_format


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    log = logging.getLogger(f"test-logs-{id(out)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel("INFO")
    return log, out


def test_json_lines_carry_the_ids_set_around_them() -> None:
    log, out = _logger(JsonFormatter())
    with logcontext.bind(request_id="req-1", trace_id="ab" * 16):
        log.info("inside")
    log.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["request_id"] == "req-1" and inside["trace_id"] == "ab" * 16
    assert "request_id" not in outside and "trace_id" not in outside


def test_text_lines_put_the_ids_after_the_message() -> None:
    log, out = _logger(TextFormatter())
    with logcontext.bind(job_id="j1"):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    first = out.getvalue().splitlines()[0]
    assert first.endswith("failed job_id=j1")  # before the traceback, not after it


def test_a_thread_bound_to_a_stream_carries_only_its_id() -> None:
    log, out = _logger(JsonFormatter())

    def work() -> None:
        log.info("frame")

    with logcontext.bind(request_id="req-that-attached-it"):
        t = threading.Thread(target=logcontext.bound(work, stream_id="cam-1"))
        t.start()
        t.join()
    entry = json.loads(out.getvalue())
    assert entry["stream_id"] == "cam-1" and "request_id" not in entry


def test_auto_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
