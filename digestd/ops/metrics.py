"""``/metrics`` in the Prometheus text format: this process's instruments
(:mod:`digestd.instruments`) and, read at scrape time so every worker reports the same
truth, what the database says now: subscribers by status, the rows waiting or in flight by
edition kind, and the newest edition of each kind by status (:mod:`digestd.ops.counts`,
cheap whatever the history).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from digestd.instruments import Metrics
from digestd.models import DeliveryStatus, SubscriberStatus
from digestd.ops import counts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def watch(metrics: Metrics, sessions: sessionmaker[Session]) -> None:
    """Add the database's current numbers to every scrape of ``metrics``."""
    metrics.registry.register(_DatabaseCollector(sessions))


class _DatabaseCollector(Collector):
    """Read at scrape time, from :mod:`digestd.ops.counts` (cheap whatever the history)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        subscribers = GaugeMetricFamily(
            "digestd_subscribers", "Subscribers by status", labels=["status"]
        )
        queue = GaugeMetricFamily(
            "digestd_queue",
            "Deliveries waiting (queued) or in flight (sending), by edition kind",
            labels=["kind", "status"],
        )
        edition = GaugeMetricFamily(
            "digestd_last_edition_deliveries",
            "Deliveries of the newest edition of each kind, by status",
            labels=["kind", "status"],
        )
        with self.sessions() as session:
            by_status = counts.subscribers(session)
            pending = counts.pending(session)
            latest = counts.latest_editions(session)
        for reader_status in SubscriberStatus:
            subscribers.add_metric([str(reader_status)], by_status.get(reader_status, 0))
        for (kind, status), n in sorted(pending.items()):
            queue.add_metric([kind, status], n)
        for last in latest:
            for state in DeliveryStatus:
                edition.add_metric([last.kind, str(state)], last.get(state))
        yield subscribers
        yield queue
        yield edition
