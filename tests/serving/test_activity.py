"""The activity recorder against real ``VersionStats`` and a test clock: differences per
interval, a bounded ring, reloaded versions and unloaded ones."""

from __future__ import annotations

from frameserve.serving.activity import ActivityRecorder
from frameserve.serving.stats import VersionStats


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _work(stats: VersionStats, batches: int, items: int) -> None:
    """``batches`` batches of ``items`` single-item requests, 1 ms queued, 4 ms computing."""
    for _ in range(batches):
        stats.record_batch(items, items, 1_000_000, 2_000_000, 1_000_000)
        for _ in range(items):
            stats.record_success(5_000_000, 1_000_000)


def test_samples_are_what_happened_in_each_interval() -> None:
    clock = Clock()
    stats = VersionStats("faces", "1", None)
    loaded = [stats]
    recorder = ActivityRecorder(lambda: loaded, interval_s=2, window_s=6, clock=clock)
    recorder.sample()  # the baseline: no sample yet
    assert recorder.to_json()["models"] == [{"name": "faces", "version": "1", "samples": []}]
    _work(stats, batches=3, items=4)
    clock.now += 2
    recorder.sample()
    clock.now += 2
    recorder.sample()  # an idle interval
    samples = recorder.to_json()["models"][0]["samples"]
    assert samples[0] == {
        "t": 1002.0, "seconds": 2.0, "inferences": 12, "executions": 3, "requests": 12,
        "inferences_per_s": 6.0, "queue_ms": 1.0, "compute_ms": 4.0,
    }  # fmt: skip
    assert samples[1]["inferences"] == 0 and samples[1]["queue_ms"] is None
    for _ in range(5):  # the ring keeps window_s / interval_s samples
        clock.now += 2
        recorder.sample()
    assert len(recorder.to_json()["models"][0]["samples"]) == 3


def test_a_reloaded_version_starts_again_and_an_unloaded_one_is_forgotten() -> None:
    clock = Clock()
    old = VersionStats("faces", "1", None)
    other = VersionStats("ocr", "2", None)
    loaded = [old, other]
    recorder = ActivityRecorder(lambda: loaded, interval_s=1, window_s=10, clock=clock)
    _work(old, batches=2, items=2)
    recorder.sample()
    loaded[0] = VersionStats("faces", "1", None)  # reloaded: its counters start at zero
    clock.now += 1
    recorder.sample()
    _work(loaded[0], batches=1, items=1)
    clock.now += 1
    recorder.sample()
    faces = recorder.to_json("faces")["models"]
    assert [s["inferences"] for s in faces[0]["samples"]] == [1]  # never a negative rate
    loaded.pop()  # ocr unloaded
    recorder.sample()
    assert [m["name"] for m in recorder.to_json()["models"]] == ["faces"]
