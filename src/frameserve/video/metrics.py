"""Prometheus metrics of live streams and video jobs, read at scrape time.

A custom collector rather than labelled counters updated on every frame: the streams and jobs
already count what they do (their ``status()`` / records), a scrape reads those, and a detached
stream or deleted job simply stops appearing (no stale label sets to clean up). Per-job series
cover queued and running jobs only; finished jobs appear in the per-state totals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from frameserve.video.live.stats import LAG_BUCKETS_S

if TYPE_CHECKING:
    from frameserve.video.jobs import JobQueue
    from frameserve.video.live import LiveStreams
    from frameserve.video.live.records import StreamStatus

log = logging.getLogger(__name__)

STREAM_STATES = ("connecting", "running", "retrying", "stopped")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class VideoCollector(Collector):
    """``frameserve_stream_*`` and ``frameserve_job*`` series from the live registries."""

    def __init__(self, streams: LiveStreams, jobs: JobQueue) -> None:
        self._streams = streams
        self._jobs = jobs

    def describe(self) -> list[Metric]:
        return []  # the series depend on what is attached; don't collect at registration

    def collect(self) -> Iterator[Metric]:
        try:
            statuses = [s.status() for s in self._streams.list()]
            records = [r.to_json() for r in self._jobs.list(None)]
        except Exception:  # a scrape must never fail the endpoint
            log.exception("reading video metrics failed")
            return
        yield from _stream_metrics(statuses)
        yield from _preview_metrics(statuses)
        yield from _job_metrics(records)


def _stream_metrics(statuses: list[StreamStatus]) -> Iterator[Metric]:
    labels = ["stream", "pipeline"]
    frames_in = CounterMetricFamily(
        "frameserve_stream_frames_in", "Frames a live stream decoded and kept", labels=labels
    )
    frames_out = CounterMetricFamily(
        "frameserve_stream_frames_out", "Results a live stream published", labels=labels
    )
    dropped = CounterMetricFamily(
        "frameserve_stream_frames_dropped",
        "Frames a live stream dropped: stale (replaced in the model queue by a newer frame) "
        "or busy (its result stage was full)",
        labels=[*labels, "reason"],
    )
    reconnects = CounterMetricFamily(
        "frameserve_stream_reconnects", "Times a live stream reopened its source", labels=labels
    )
    fps = GaugeMetricFamily(
        "frameserve_stream_fps", "Frames per second over the last seconds", labels=[*labels, "side"]
    )
    lag = GaugeMetricFamily(
        "frameserve_stream_lag_seconds",
        "DEPRECATED, removed in the next release: use the histogram "
        "frameserve_stream_result_lag_seconds. End-to-end lag from a frame's arrival to its "
        "published result, p50 and p99 over the last seconds",
        labels=[*labels, "quantile"],
    )
    lag_histogram = HistogramMetricFamily(
        "frameserve_stream_result_lag_seconds",
        "End-to-end lag from a frame's arrival to its published result",
        labels=labels,
    )
    state = GaugeMetricFamily(
        "frameserve_stream_state", "1 for the stream's current state", labels=[*labels, "state"]
    )
    for s in statuses:
        key, st = [s.id, s.pipeline], s.stats
        frames_in.add_metric(key, st.frames_in)
        frames_out.add_metric(key, st.frames_out)
        for reason, count in st.dropped.items():
            dropped.add_metric([*key, reason], count)
        reconnects.add_metric(key, s.reconnects)
        fps.add_metric([*key, "in"], st.fps_in)
        fps.add_metric([*key, "out"], st.fps_out)
        for quantile, value in (("0.5", st.lag_p50_ms), ("0.99", st.lag_p99_ms)):
            if value is not None:
                lag.add_metric([*key, quantile], value / 1000.0)
        if st.lag_buckets:
            bounds = [*map(str, LAG_BUCKETS_S), "+Inf"]
            lag_histogram.add_metric(
                key, list(zip(bounds, st.lag_buckets, strict=True)), st.lag_sum_s
            )
        for name in STREAM_STATES:
            state.add_metric([*key, name], 1.0 if s.state == name else 0.0)
    streams = GaugeMetricFamily("frameserve_streams", "Live streams attached")
    streams.add_metric([], len(statuses))
    yield from (streams, frames_in, frames_out, dropped, reconnects, fps, lag, lag_histogram, state)


def _preview_metrics(statuses: list[StreamStatus]) -> Iterator[Metric]:
    """Live previews: who watches, and the pictures encoded for them (their cost)."""
    labels = ["stream", "pipeline"]
    watchers = GaugeMetricFamily(
        "frameserve_stream_preview_watchers",
        "Open preview.mjpeg connections, a recent preview.jpg request and an HLS reader",
        labels=labels,
    )
    frames = CounterMetricFamily(
        "frameserve_stream_preview_frames",
        "Annotated pictures a live stream encoded for previews, by kind (jpeg, hls)",
        labels=[*labels, "kind"],
    )
    for s in statuses:
        if s.preview is None:
            continue
        key = [s.id, s.pipeline]
        watchers.add_metric(key, s.preview.watchers)
        frames.add_metric([*key, "jpeg"], s.preview.jpeg_frames)
        frames.add_metric([*key, "hls"], s.preview.hls_frames)
    yield from (watchers, frames)


def _job_metrics(records: list[dict[str, Any]]) -> Iterator[Metric]:
    totals = GaugeMetricFamily("frameserve_jobs", "Video jobs by state", labels=["state"])
    for name in JOB_STATES:
        totals.add_metric([name], sum(1 for r in records if r["state"] == name))
    labels = ["job", "pipeline"]
    done = GaugeMetricFamily(
        "frameserve_job_frames_done", "Frames a queued or running job has written", labels=labels
    )
    total = GaugeMetricFamily(
        "frameserve_job_frames_total", "Frames the job will write (0: unknown)", labels=labels
    )
    fps = GaugeMetricFamily(
        "frameserve_job_fps", "A running job's frames per second", labels=labels
    )
    for r in records:
        if r["state"] not in ("queued", "running"):
            continue
        key = [str(r["id"]), str(r["pipeline"])]
        progress = r["progress"]
        done.add_metric(key, progress["frames_done"])
        total.add_metric(key, progress["frames_total"] or 0)
        fps.add_metric(key, progress["fps"] or 0.0)
    yield from (totals, done, total, fps)
