"""``frameserve tune``: the search, the write-back into model.yaml and the report.

End to end on a real model (the example repository's conv net on OpenVINO and the zoo's face
detector) with a tiny budget; the search itself is checked on objective functions given as
plain Python, where the best answer is known. No test asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from frameserve.cli.main import main
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.tools.example_models import make_example_repository
from frameserve.tools.tune import (
    LadderPoint,
    Trial,
    TuneSettings,
    _plateau,
    canonical,
    coordinate_search,
    grid_search,
    tune_model,
)
from frameserve.tools.tune_report import pareto_front, rewrite_config, tuned_settings
from frameserve.tools.tune_space import (
    Candidate,
    Precision,
    SearchSpace,
    apply,
    batch_sizes,
    is_int8,
    layouts_for,
)

FAST = ["--budget-minutes", "0.05", "--window", "0.25", "--final-window", "0.3"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_example_repository(root)
    return root


def _serves(repo: Path, model: str) -> str:
    settings = ServerSettings(repository=repo, model_control_mode="explicit", load_models=(model,))
    with LocalServer(settings) as local:
        return local.server.model_version(model).describe()


def test_tune_writes_a_config_the_server_loads(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (repo / "convnet" / "model.yaml").read_text()
    report = tmp_path / "report"
    args = ["tune", "--repository", str(repo), "--model", "convnet", "--p99-ms", "500",
            "--max-batch-size", "4", "--delays", "0", "2",
            "--report", str(report), *FAST]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "chosen:" in out and "model.yaml: written" in out
    backups = list((repo / "convnet").glob("model.yaml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == before
    config = load_model_config(repo / "convnet" / "model.yaml")
    assert config.instances and config.threads and config.max_batch_size in (1, 2, 4)
    assert config.warmup.count == 1  # keys the tuner does not own are kept
    assert "tuned by frameserve tune" in (repo / "convnet" / "model.yaml").read_text()
    # the server loads what was written, with the tuned layout
    assert f"requests={config.instances}" in _serves(repo, "convnet")
    trials = json.loads((report / "trials.json").read_text())
    assert trials and {"config", "throughput", "p99_ms", "rung"} <= trials[0].keys()
    assert any(t["rung"] == "final" for t in trials)
    assert (report / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "| config | rung |" in (report / "report.md").read_text()


def test_unreachable_target_writes_nothing(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (repo / "convnet" / "model.yaml").read_text()
    args = ["tune", "--repository", str(repo), "--model", "convnet", "--p99-ms", "0.001",
            "--max-batch-size", "1", "--report", str(tmp_path / "r"), *FAST]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no configuration met p99 <= 0.001 ms; model.yaml unchanged" in err
    assert (repo / "convnet" / "model.yaml").read_text() == before
    assert not list((repo / "convnet").glob("*.bak"))
    assert "no configuration met the target" in (tmp_path / "r" / "report.md").read_text()


def test_dry_run_leaves_model_yaml(repo: Path, tmp_path: Path) -> None:
    before = (repo / "matmul" / "model.yaml").read_text()
    args = ["tune", "--repository", str(repo), "--model", "matmul", "--p99-ms", "1000",
            "--max-batch-size", "2", "--dry-run",
            "--report", str(tmp_path / "r"), *FAST]  # fmt: skip
    assert main(args) == 0
    assert (repo / "matmul" / "model.yaml").read_text() == before


def test_tune_zoo_detector_keeps_comments(zoo_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(zoo_repository / "faces", repo / "faces")
    settings = TuneSettings(p99_ms=2000, budget_s=3, max_batch=4, delays=(0.0, 2.0),
                            screen_s=0.25, final_s=0.3, warmup_s=0.1, finalists=1)  # fmt: skip
    result = tune_model(repo, "faces", settings)
    assert result.best is not None and result.best.feasible
    assert {p.label() for p in result.space.precisions} >= {"f32"}
    base = yaml.safe_load((repo / "faces" / "model.yaml").read_text())
    new = tuned_settings(base, result.best, [1])
    text = rewrite_config((repo / "faces" / "model.yaml").read_text(), new, "test")
    assert "# the .tflite graph hard-codes batch 1" in text  # the user's comments survive
    assert yaml.safe_load(text)["postprocess"] == base["postprocess"]


@pytest.mark.parametrize(
    "arguments",
    [
        ["--model", "nope", "--p99-ms", "10"],
        ["--model", "convnet"],
        ["--pipeline", "faces", "--model", "convnet", "--p99-ms", "1"],
    ],
)
def test_bad_arguments(
    repo: Path, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    try:
        code = main(["tune", "--repository", str(repo), *arguments, *FAST])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert err and ("has no model 'nope'" in err or "--p99-ms" in err or "not allowed" in err)


# -- the search ---------------------------------------------------------------------------------


def _space() -> SearchSpace:
    return SearchSpace(
        precisions=(Precision(1, "f32"), Precision(1, "bf16"), Precision(2, "bf16", int8=True)),
        layouts=((1, 2), (2, 1)),
        batches=(1, 2, 4, 8, 16),
        delays=(0.0, 1.0, 2.0, 5.0),
    )


def _objective(c: Candidate) -> float:
    """Throughput of a made-up model: precision x layout x batch, best at b8 d2, 2x1, int8."""
    speed = {"f32": 1.0, "bf16": 1.6}[c.precision.hint] * (1.5 if c.precision.int8 else 1.0)
    layout = 1.2 if c.instances == 2 else 1.0
    batch = {1: 1.0, 2: 1.5, 4: 2.0, 8: 2.4, 16: 2.3}[c.batch]
    delay = {0.0: 1.0, 1.0: 1.05, 2.0: 1.1, 5.0: 0.9}[c.delay_ms] if c.batch > 1 else 1.0
    return 100 * speed * layout * batch * delay


def _evaluator(calls: list[Candidate], p99_limit: float = 1e9):  # type: ignore[no-untyped-def]
    async def evaluate(c: Candidate) -> Trial:
        calls.append(c)
        thr = _objective(c)
        p99 = c.batch * 4.0 + c.delay_ms
        point = LadderPoint(1, thr, p99 / 2, p99)
        feasible = p99 <= p99_limit
        return Trial(c, "screen", thr if feasible else 0.0, p99, p99 / 2, 1, feasible,
                     (point,), 0.0)  # fmt: skip

    return evaluate


def test_coordinate_search_finds_the_grid_best_in_a_third_of_the_trials() -> None:
    space = _space()
    start = canonical(Candidate(Precision(1, "f32"), 1, 2, 8, 2.0))
    deadline = time.monotonic() + 60
    calls: list[Candidate] = []
    seen = asyncio.run(coordinate_search(_evaluator(calls), space, start, 2, deadline))
    grid_calls: list[Candidate] = []
    grid = asyncio.run(grid_search(_evaluator(grid_calls), space, deadline))
    best = max(seen.values(), key=lambda t: t.score)
    grid_best = max(grid.values(), key=lambda t: t.score)
    assert best.throughput >= 0.95 * grid_best.throughput
    assert len(calls) == len(set(calls)) <= len(grid_calls) / 3


def test_coordinate_search_respects_the_latency_target() -> None:
    calls: list[Candidate] = []
    start = canonical(Candidate(Precision(1, "f32"), 1, 2, 1, 0.0))
    seen = asyncio.run(
        coordinate_search(
            _evaluator(calls, p99_limit=20), _space(), start, 2, time.monotonic() + 60
        )
    )
    best = max(seen.values(), key=lambda t: t.score)
    assert best.feasible and best.p99_ms <= 20
    assert best.candidate.batch == 4  # batch 8 is faster but misses the target


def test_space_helpers(tmp_path: Path) -> None:
    assert layouts_for(2) == ((1, 2), (2, 1))
    assert layouts_for(6) == ((1, 6), (2, 3), (3, 2), (6, 1))
    assert batch_sizes(0) == (0,)
    assert batch_sizes(12) == (1, 2, 4, 8, 12)
    assert canonical(Candidate(Precision(1, "f32"), 1, 2, 1, 5.0)).delay_ms == 0.0
    assert _space().size == 3 * 2 * 5 * 4
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.xml").write_text('<layer id="3" type="FakeQuantize" />')
    assert is_int8(tmp_path / "1") and not is_int8(tmp_path / "2")


def test_the_start_is_what_serves_today() -> None:
    from frameserve.serving.config import parse_model_config

    config = parse_model_config(
        {"backend": "openvino", "precision": "f32", "max_batch_size": 8}, "model.yaml"
    )
    # version 2 is INT8 (tried at bf16 only) and the newest: the start serves it, not v1 f32
    start = _space().nearest(config, [1, 2])
    assert start.precision == Precision(2, "bf16", int8=True) and start.batch == 8
    assert _space().nearest(config, [1]).precision == Precision(1, "f32")


def test_apply_and_tuned_settings() -> None:
    base = {"backend": "openvino", "max_batch_size": 8, "dynamic_batching": {"max_queue_size": 64}}
    best = Candidate(Precision(2, "bf16", int8=True), 2, 1, 4, 1.0)
    config = apply(base, best)
    assert config["dynamic_batching"] == {
        "max_queue_size": 64, "max_queue_delay_ms": 1.0, "preferred_batch_sizes": [4]
    }  # fmt: skip
    assert config["version_policy"] == {"specific": [2]} and config["precision"] == "bf16"
    trial = Trial(best, "final", 1.0, 1.0, 1.0, 1, True, (), 0.0)
    # version 2 is the newest: the default policy serves it, so the policy is left alone
    assert "version_policy" not in tuned_settings(base, trial, [1, 2])
    assert tuned_settings(base, trial, [1, 2, 3])["version_policy"] == {"specific": [2]}


def test_rewrite_config_replaces_only_tuned_keys() -> None:
    text = (
        "# header comment\nbackend: openvino\nmax_batch_size: 8   # old\n"
        "dynamic_batching:\n  max_queue_delay_ms: 2\n  preferred_batch_sizes: [4, 8]\n"
        "preprocess:\n  color: rgb  # keep me\n"
    )
    new = rewrite_config(text, {"max_batch_size": 4, "dynamic_batching": {"x": 1}}, "now")
    assert "# header comment" in new and "color: rgb  # keep me" in new
    assert "# old" not in new and "preferred_batch_sizes: [4, 8]" not in new
    parsed = yaml.safe_load(new)
    assert parsed["max_batch_size"] == 4 and parsed["dynamic_batching"] == {"x": 1}
    # tuning again replaces the marked block instead of stacking a second one
    again = rewrite_config(new, {"max_batch_size": 2}, "later")
    assert (
        again.count("# tuned by frameserve tune") == 1
        and yaml.safe_load(again)["max_batch_size"] == 2
    )


def test_pareto_and_plateau() -> None:
    points = [(5.0, 100.0), (6.0, 90.0), (7.0, 150.0), (10.0, 150.0), (12.0, 200.0)]
    assert pareto_front(points) == {0, 2, 4}
    ladder = [LadderPoint(c, t, 1, 1) for c, t in ((1, 100), (2, 180), (4, 181), (8, 182))]
    assert not _plateau(ladder[:3]) and _plateau(ladder)
