"""``frameserve serve``'s flag conventions: help text with the default and the environment
variable on every flag, and every flag settable as ``FRAMESERVE_<FLAG>``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from frameserve.cli.args import apply_environment, env_name
from frameserve.cli.main import build_parser


def _serve_parser(monkeypatch: pytest.MonkeyPatch, **env: str) -> argparse.ArgumentParser:
    for key in [k for k in os.environ if k.startswith("FRAMESERVE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_every_flag_has_help_a_default_and_an_env_var(monkeypatch):
    parser = _serve_parser(monkeypatch)
    text = parser.format_help().replace("\n", " ")
    text = " ".join(text.split())  # argparse wraps lines
    for action in _flags(parser):
        assert action.help, f"{action.option_strings[0]}: no help text"
        assert env_name(action) in text, f"{action.option_strings[0]}: env var not shown"
    assert text.count("default") >= len(_flags(parser))
    assert "FRAMESERVE_MAX_QUEUED_JOBS" in text and "(default: 32;" in text


def test_flags_come_from_the_environment(monkeypatch):
    parser = _serve_parser(
        monkeypatch,
        FRAMESERVE_HTTP_PORT="9100",
        FRAMESERVE_REPOSITORY="/srv/models",
        FRAMESERVE_LOAD_MODEL="faces, matmul",
        FRAMESERVE_STRICT_READINESS="true",
        FRAMESERVE_DRAIN_DELAY="7.5",
        FRAMESERVE_MODEL_CONTROL_MODE="explicit",
    )
    args = parser.parse_args([])
    assert args.http_port == 9100 and args.repository == Path("/srv/models")
    assert args.load_model == ["faces", "matmul"] and args.strict_readiness is True
    assert args.drain_delay == 7.5 and args.model_control_mode == "explicit"
    assert parser.parse_args(["--http-port", "9200"]).http_port == 9200  # the command line wins


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FRAMESERVE_HTTP_PORT", "abc", "expected a port 0..65535, got 'abc'"),
        ("FRAMESERVE_MAX_STREAMS", "0", "expected an integer >= 1, got 0"),
        ("FRAMESERVE_STRICT_READINESS", "maybe", "expected one of"),
        ("FRAMESERVE_LOG_FORMAT", "xml", "expected one of auto, json, text"),
    ],
)
def test_a_bad_environment_value_names_the_variable(monkeypatch, capsys, name, value, expected):
    with pytest.raises(SystemExit) as exit_info:
        _serve_parser(monkeypatch, **{name: value})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"environment variable {name}={value!r}" in err and expected in err


def test_every_flag_kind_reads_its_environment_form():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--switch", action="store_true")
    parser.add_argument("--item", action="append", default=[])
    parser.add_argument("--mode", choices=["a", "b"], default="a")
    env = {"X_COUNT": "3", "X_SWITCH": "off", "X_ITEM": "p,q", "X_MODE": "b"}
    apply_environment(parser, {"FRAMESERVE_" + k[2:]: v for k, v in env.items()})
    args = parser.parse_args([])
    assert (args.count, args.switch, args.item, args.mode) == (3, False, ["p", "q"], "b")
