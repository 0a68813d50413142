"""A live stream's counters: the lag histogram Prometheus reads beside the window's percentiles."""

from __future__ import annotations

from frameserve.video.live.stats import LAG_BUCKETS_S, StreamStats


def test_the_lag_histogram_counts_every_record_since_the_start() -> None:
    stats = StreamStats(window_s=5.0)
    lags = [0.004, 0.01, 0.03, 0.2, 0.2, 3.0, 60.0]  # 0.01 sits on a bound: counted in it
    for i, lag in enumerate(lags):
        stats.frame_out(stats.started + i * 10.0, lag)  # far apart: the window keeps only one
    snap = stats.snapshot(stats.started + 60.0)
    assert len(snap.lag_buckets) == len(LAG_BUCKETS_S) + 1
    expected = [sum(1 for lag in lags if lag <= bound) for bound in LAG_BUCKETS_S] + [len(lags)]
    assert list(snap.lag_buckets) == expected
    assert abs(snap.lag_sum_s - sum(lags)) < 1e-9
    assert snap.lag_p50_ms == 60000.0  # the window's percentiles see the last record only
