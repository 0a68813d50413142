"""The Grafana dashboard and Prometheus alert rules in ``deploy/`` name only metrics that a real
``frameserve serve`` exports: the server is started, a model is inferred so the per-model series
appear, ``/metrics`` is parsed with prometheus_client's parser, and every metric named by an
expression must be among the series the scraped families define."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from prometheus_client.parser import text_string_to_metric_families

from models import make_model, onnx_file, simple_add_sub
from servers import RunningServer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "frameserve-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "frameserve-alerts.yml"

# Series each family type defines in the exposition format (prometheus_client names a counter
# family without its _total suffix).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}
# Words of PromQL that are not metric names when not followed by "(".
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_DURATION_AFTER_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions (followed by
    '('), keywords, aggregation operators, label names (inside {} or by/without/on/ignoring
    groups), label values (strings), durations or Grafana variables."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)  # label matchers, after strings (they may hold braces)
    text = _RANGE.sub(" ", text)  # [5m], [$__rate_interval], subqueries [1h:5m]
    text = _GROUPING.sub(r"\1", text)
    text = _DURATION_AFTER_OFFSET.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside matchers
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group()
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        if text[: m.start()].rstrip().endswith(tuple("0123456789.")) and m.start() > 0:
            continue  # the exponent or unit of a number literal (1e3, 5m)
        names.add(word)
    return names


def test_tokenizer_keeps_metrics_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(x_bucket{model=~"$model", a="b{c}"}'
        "[$__rate_interval]))) / on (instance) group_left (pod) y_total offset 5m > bool 1e3"
        " and z unless sum without (le) (w) "
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z", "w"}


def _dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(data["panels"])
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)  # Grafana's, not PromQL
            assert m is not None, f"templating {var['name']}: unexpected query {query!r}"
            exprs.append(m.group(1))
    return exprs


def _alert_exprs() -> list[str]:
    data = yaml.safe_load(ALERTS.read_text())
    return [str(rule["expr"]) for group in data["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Series names a real server defines after one inference."""
    from servers import ServerLauncher

    repo = tmp_path_factory.mktemp("repo")
    make_model(repo, "simple", "onnxruntime", onnx_file(simple_add_sub), {"max_batch_size": 8})
    launcher = ServerLauncher(tmp_path_factory.mktemp("server"))
    try:
        server: RunningServer = launcher.start(repo)
        _infer(server)
        status, body = server.get("/metrics")
        assert status == 200
        names = set()
        for family in text_string_to_metric_families(body.decode()):
            names.update(family.name + s for s in _SUFFIXES[family.type])
            names.update(sample.name for sample in family.samples)
        yield names
    finally:
        launcher.stop_all()


def _infer(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.http_url) as client:
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = httpclient.InferInput(name, [1, 16], "INT32")
            tensor.set_data_from_numpy(np.ones((1, 16), dtype=np.int32))
            inputs.append(tensor)
        client.infer("simple", inputs)


@pytest.mark.parametrize(
    ("where", "exprs"), [("dashboard", _dashboard_exprs), ("alerts", _alert_exprs)]
)
def test_every_expression_names_exported_metrics(
    exported: set[str], where: str, exprs: Callable[[], list[str]]
) -> None:
    found = exprs()
    assert found, f"{where}: no expressions found"
    missing = {
        expr: sorted(metric_names(expr) - exported)
        for expr in found
        if metric_names(expr) - exported
    }
    assert not missing, f"{where}: metrics not exported by frameserve: {missing}"
    assert all(metric_names(expr) for expr in found), f"{where}: an expression names no metric"
