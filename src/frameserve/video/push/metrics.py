"""Prometheus series of the push outputs, read at scrape time like ``video.metrics``: the
outputs count what they do, a scrape copies the counters (live groups and the last ended ones).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from frameserve.video.push.hub import PushHub

log = logging.getLogger(__name__)


class PushCollector(Collector):
    """``frameserve_push_{sent,dropped,failed}_total`` and ``frameserve_push_queued``, labelled
    by kind (job or stream), id, output (its index in ``push``) and type."""

    def __init__(self, hub: PushHub) -> None:
        self._hub = hub

    def describe(self) -> list[Metric]:
        return []  # the series depend on what runs; don't collect at registration

    def collect(self) -> Iterator[Metric]:
        labels = ["kind", "id", "output", "type"]
        sent = CounterMetricFamily(
            "frameserve_push_sent", "Messages a push output delivered", labels=labels
        )
        dropped = CounterMetricFamily(
            "frameserve_push_dropped",
            "Messages a push output never sent: its queue was full, or it ended first",
            labels=labels,
        )
        failed = CounterMetricFamily(
            "frameserve_push_failed",
            "Messages a push output gave up on after its tries",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "frameserve_push_queued", "Messages waiting in a push output's queue", labels=labels
        )
        try:
            for group in self._hub.groups():
                for i, status in enumerate(group.status()):
                    key = [group.kind, group.id, str(i), str(status["type"])]
                    sent.add_metric(key, status["sent"])
                    dropped.add_metric(key, status["dropped"])
                    failed.add_metric(key, status["failed"])
                    queued.add_metric(key, status["queued"])
        except Exception:  # a scrape must never fail the endpoint
            log.exception("reading push metrics failed")
            return
        yield from (sent, dropped, failed, queued)
