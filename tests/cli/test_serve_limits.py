"""``frameserve serve``'s limits group: durations, and flags mapped onto the settings."""

from __future__ import annotations

import argparse
import os

import pytest

from frameserve.cli.main import build_parser
from frameserve.cli.serve_limits import duration, request_limits, video_limits


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("12h", 43200.0), ("7d", 604800.0),
     ("0.5h", 1800.0), ("off", 0.0), ("0", 0.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7w", "-1d", "d", "1 d"])
def test_bad_durations_say_what_was_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a duration such as 90s"):
        duration(text)


def _serve_args(monkeypatch: pytest.MonkeyPatch, *argv: str) -> argparse.Namespace:
    for key in [k for k in os.environ if k.startswith("FRAMESERVE_")]:
        monkeypatch.delenv(key)
    return build_parser().parse_args(["serve", *argv])


def test_flags_become_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _serve_args(
        monkeypatch,
        *("--max-json-mb", "0.5", "--request-timeout", "0", "--model-timeout", "2.5"),
        *("--max-connections", "0", "--max-images", "3", "--job-retention", "off"),
        *("--state-quota-mb", "0", "--max-video-frames", "0", "--max-subscribers", "2"),
    )
    r = request_limits(args)
    assert r.max_json_bytes == 2**19 and r.max_images == 3
    assert r.request_timeout_s is None and r.model_timeout_s == 2.5 and r.max_connections is None
    v = video_limits(args)
    assert v.job_retention_s is None and v.state_quota_bytes is None and v.max_frames is None
    assert v.max_subscribers == 2 and v.max_duration_s == 6 * 3600.0


def test_defaults_bound_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    r = request_limits(_serve_args(monkeypatch))
    v = video_limits(_serve_args(monkeypatch))
    assert r.request_timeout_s == 60.0 and r.model_timeout_s is None
    assert r.max_connections == 1024 and r.max_grpc_streams == 100
    assert v.job_retention_s == 7 * 86400.0 and v.state_quota_bytes == 20 * 2**30
