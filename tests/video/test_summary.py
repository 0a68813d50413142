"""Per-video summaries from per-frame lines made here (the contract of each result kind):
detections with tracks, classes, moderation verdicts, quality scores with defects, texts and
masks; range merging; the ``summary:`` block; bad lines named by file and line."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest

from frameserve.errors import ConfigError, InvalidInput
from frameserve.video.aggregators import Point, ranges
from frameserve.video.config import parse_video_pipeline
from frameserve.video.summary import summarize, summarize_file, summary_path
from frameserve.video.summary_spec import SummarySpec

FPS = 10.0


def frame(i: int, **result: Any) -> dict[str, Any]:
    return {"frame": i, "pts": i / FPS, "pts_ticks": i * 9000, **result}


def lines(items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"test:{n + 1}", line) for n, line in enumerate(items)]


def face(track: int | None = None, score: float = 0.9, label: str = "face") -> dict[str, Any]:
    d: dict[str, Any] = {"box": [0, 0, 10, 10], "score": score, "label": label}
    if track is not None:
        d["track_id"] = track
    return d


def test_ranges_join_neighbours_and_short_gaps_only() -> None:
    points = [Point(s, s, s / FPS) for s in (0, 1, 2, 5, 6, 20)]
    runs = ranges(points, 0.1, gap=0.25)  # 2 -> 5: 0.2 s uncovered, joins; 6 -> 20 does not
    assert [[p.frame for p in run] for run in runs] == [[0, 1, 2, 5, 6], [20]]
    assert len(ranges(points, 0.1, gap=0.0)) == 3
    # neighbours in the file join whatever their time gap (a sparse sampling)
    sparse = [Point(0, 0, 0.0), Point(1, 30, 1.0)]
    assert len(ranges(sparse, 1.0, gap=0.0)) == 1


def test_detections_count_track_and_range_per_label() -> None:
    items = [frame(i, detections=[]) for i in range(30)]
    for i in range(5, 15):  # a face tracked from 0.5 s to 1.4 s
        items[i]["detections"] = [face(1)]
    for i in range(10, 12):  # a second face, a short track
        items[i]["detections"].append(face(2))
    items[20]["detections"] = [face(3, label="hand"), face(4, score=0.1, label="hand")]
    spec = SummarySpec.model_validate({"detections": {"min_track_frames": 3, "min_score": 0.5}})
    out = summarize(lines(items), spec, "faces")
    assert out["frames"] == 30 and out["step_s"] == pytest.approx(0.1)
    det = out["detections"]
    assert det["frames_with_detections"] == 11 and det["max_per_frame"] == 2
    assert det["tracked"] is True
    faces = det["labels"]["face"]
    assert faces["count"] == 12 and faces["frames"] == 10 and faces["max_per_frame"] == 2
    assert faces["first_seen"] == {"t": 0.5, "frame": 5}
    assert faces["last_seen"] == {"t": 1.4, "frame": 14}
    assert faces["ranges"] == [
        {"start": 0.5, "end": 1.5, "start_frame": 5, "end_frame": 14, "frames": 10}
    ]
    assert faces["track_count"] == 1  # track 2 has 2 frames < 3
    assert faces["tracks"][0]["track_id"] == 1 and faces["tracks"][0]["frames"] == 10
    hand = det["labels"]["hand"]
    assert hand["count"] == 1  # the 0.1 one is under min_score
    assert set(out) == {"pipeline", "frames", "start", "end", "step_s", "detections"}


def test_classes_share_and_mean_score_over_sampled_frames() -> None:
    items = []
    for i in range(10):
        top = ("cat", 0.8) if i < 7 else ("dog", 0.6)
        other = ("dog", 0.2) if i < 7 else ("cat", 0.4)
        items.append(frame(i, classes=[{"label": lb, "score": s} for lb, s in (top, other)]))
    out = summarize(lines(items), SummarySpec.model_validate({"classes": {"top_k": 1}}))
    assert out["classes"] == {
        "frames": 10,
        "top": [{"label": "cat", "share": 0.7, "mean_score": 0.68, "top1_frames": 7}],
    }


def test_moderation_merges_unsafe_frames_and_gives_the_verdict() -> None:
    def verdict(unsafe: bool, labels: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        label = "unsafe" if unsafe else "safe"
        return {"label": label, "labels": list(labels), "score": 0.8 if unsafe else 0.1}

    items = [frame(i, detections=[], verdict=verdict(False)) for i in range(40)]
    for i in (10, 11, 13):  # one gap of one frame: merges with a 0.5 s gap
        items[i]["verdict"] = verdict(True, ["BELLY_EXPOSED"])
    items[30]["verdict"] = verdict(True, ["FEET_EXPOSED"])  # alone: under min_frames
    spec = SummarySpec.model_validate({"moderation": {"merge_gap_s": 0.5, "min_frames": 2}})
    mod = summarize(lines(items), spec)["moderation"]
    assert mod["verdict"]["label"] == "unsafe"
    assert mod["verdict"]["labels"] == ["BELLY_EXPOSED"]
    assert mod["verdict"]["unsafe_frames"] == 3 and mod["verdict"]["frames"] == 40
    assert mod["ranges"] == [
        {
            "start": 1.0, "end": 1.4, "start_frame": 10, "end_frame": 13, "frames": 3,
            "labels": ["BELLY_EXPOSED"], "max_score": 0.8,
        }
    ]  # fmt: skip
    safe = [frame(i, detections=[], verdict=verdict(False)) for i in range(5)]
    assert summarize(lines(safe))["moderation"]["verdict"]["label"] == "safe"


def test_quality_statistics_worst_ranges_and_defects() -> None:
    scores = [80.0] * 50
    scores[10:15] = [30.0] * 5  # a bad stretch at 1.0-1.5 s
    scores[40:42] = [45.0, 44.0]  # a milder one
    items = [
        frame(i, quality={"score": s, "method": "brisque"}, defects=[])
        for i, s in enumerate(scores)
    ]
    for i in range(20, 25):
        items[i]["defects"] = ["black"]
    for i in (30, 31, 32):
        items[i]["defects"] = ["frozen", "blurry"]
    spec = SummarySpec.model_validate({"quality": {"low_score": 50, "worst_ranges": 1}})
    q = summarize(lines(items), spec)["quality"]
    assert q["method"] == "brisque" and q["frames"] == 50
    assert q["mean"] == pytest.approx(np.mean(scores), abs=1e-3)
    assert q["p10"] == pytest.approx(np.percentile(scores, 10), abs=1e-3)
    assert q["min"] == 30.0 and q["worst_frame"] == {"t": 1.0, "frame": 10, "score": 30.0}
    assert [(r["start"], r["end"], r["mean_score"]) for r in q["worst_ranges"]] == [
        (1.0, 1.5, 30.0)
    ]
    assert q["low_seconds"] == pytest.approx(0.7)
    assert q["defects"]["black"]["ranges"][0]["start"] == 2.0
    assert q["defects"]["black"]["ranges"][0]["end"] == 2.5
    assert q["defects"]["black"]["seconds"] == 0.5
    assert q["defects"]["frozen"]["ranges"][0]["start_frame"] == 30
    assert q["defects"]["blurry"]["seconds"] == pytest.approx(0.3)
    assert q["defects"]["blocky"] == {"seconds": 0.0, "ranges": []}


def test_texts_distinct_with_first_and_last_seen() -> None:
    def texts(*words: str) -> list[dict[str, Any]]:
        return [{"polygon": [[0, 0]] * 4, "text": w, "score": 0.9} for w in words]

    items = [frame(i, texts=texts("HELLO")) for i in range(4)]
    items += [frame(4, texts=texts("WORLD ", "HELLO", "HELLO"))]
    items += [frame(5, texts=[{"polygon": [[0, 0]] * 4, "text": "noise", "score": 0.2}])]
    out = summarize(lines(items))["texts"]
    assert out["distinct"] == 2
    hello, world = out["texts"]
    assert hello["text"] == "HELLO" and hello["frames"] == 5
    assert hello["first_seen"]["frame"] == 0 and hello["last_seen"]["frame"] == 4
    assert world["text"] == "WORLD" and world["frames"] == 1


def _png(coverage_rows: int) -> dict[str, Any]:
    mask = np.zeros((10, 10), np.uint8)
    mask[:coverage_rows] = 255
    ok, data = cv2.imencode(".png", mask)
    assert ok
    return {"png": base64.b64encode(data.tobytes()).decode(), "width": 10, "height": 10}


def test_masks_ranges_where_the_person_is() -> None:
    items = [frame(i, mask=_png(5 if 3 <= i < 7 else 0)) for i in range(10)]
    every = SummarySpec.model_validate({"masks": {"check_every_s": 0}})
    out = summarize(lines(items), every)["masks"]
    assert out["frames_with_mask"] == 4 and out["mean_coverage"] == pytest.approx(0.2)
    assert out["ranges"] == [
        {"start": 0.3, "end": 0.7, "start_frame": 3, "end_frame": 6, "frames": 4}
    ]
    # By default a mask is decoded at most every 0.25 s: frames 0, 3, 6, 9 here; the frames
    # after a measured one count as it (3 -> 3, 4, 5; 6 -> 6, 7, 8).
    out = summarize(lines(items))["masks"]
    assert out["frames"] == 10 and out["frames_with_mask"] == 6
    assert [(r["start_frame"], r["end_frame"]) for r in out["ranges"]] == [(3, 8)]


def test_auto_picks_aggregators_by_result_kind_and_declared_only_those() -> None:
    items = [
        frame(i, detections=[face()], verdict={"label": "safe", "labels": []}) for i in range(3)
    ]
    assert {"detections", "moderation"} <= set(summarize(lines(items)))
    declared = summarize(lines(items), SummarySpec.model_validate({"moderation": {}}))
    assert "moderation" in declared and "detections" not in declared
    empty = summarize([])
    assert empty["frames"] == 0 and empty["end"] == 0.0


def test_summary_of_a_file_and_bad_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "clip.jsonl"
    path.write_bytes(b"".join(orjson.dumps(frame(i, classes=[])) + b"\n" for i in range(3)))
    assert summarize_file(path)["classes"]["frames"] == 3
    assert summary_path(path) == tmp_path / "clip.summary.json"
    with path.open("ab") as f:
        f.write(b'{"frame": "x", "pts": 0}\n')
    with pytest.raises(InvalidInput, match=r"clip.jsonl:4: frame: expected the frame index"):
        summarize_file(path)
    path.write_bytes(b"{not json\n")
    with pytest.raises(InvalidInput, match=r"clip.jsonl:1: not a JSON line"):
        summarize_file(path)
    bad = [frame(0, verdict={"label": "maybe"})]
    with pytest.raises(InvalidInput, match=r"test:1: verdict: expected"):
        summarize(lines(bad))


def test_the_summary_block_of_a_pipeline_file() -> None:
    base = {"steps": [{"model": "faces"}]}
    config = parse_video_pipeline({**base, "summary": {"detections": {"min_track_frames": 5}}}, "p")
    spec = config.summary_spec()
    assert spec is not None and spec.detections is not None
    assert spec.detections.min_track_frames == 5 and spec.declared() == ["detections"]
    assert parse_video_pipeline(base, "p").summary_spec() == SummarySpec(auto=True)
    assert parse_video_pipeline({**base, "summary": False}, "p").summary_spec() is None
    with pytest.raises(ConfigError, match="summary.detections.min_track_frames"):
        parse_video_pipeline({**base, "summary": {"detections": {"min_track_frames": 0}}}, "p")
    with pytest.raises(ConfigError, match="expected at least one of detections"):
        parse_video_pipeline({**base, "summary": {}}, "p")
    with pytest.raises(ConfigError, match="summary.quality.low_scor"):
        parse_video_pipeline({**base, "summary": {"quality": {"low_scor": 3}}}, "p")
    fruc = {"interpolate": {"model": "fruc"}, "summary": {"detections": {}}}
    with pytest.raises(ConfigError, match="transformation pipeline"):
        parse_video_pipeline(fruc, "p")
