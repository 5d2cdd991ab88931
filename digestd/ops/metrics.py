"""``/metrics`` in the Prometheus text format: this process's instruments
(:mod:`digestd.instruments`) and, read at scrape time so every worker reports the same
truth, what the database says now: subscribers by status, the rows waiting or in flight by
edition kind, the newest edition of each kind by status (:mod:`digestd.ops.counts`,
cheap whatever the history) and each feed's health (the feeds table: a row per feed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.instruments import Metrics
from digestd.logs import redact
from digestd.models import DeliveryStatus, Feed, SubscriberStatus
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
            feeds = session.execute(
                select(Feed.id, Feed.url, Feed.failures, Feed.last_success_at).order_by(Feed.id)
            ).all()
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
        yield from _feed_health(feeds)


def _feed_health(feeds: Sequence[tuple[int, str, int, datetime | None]]) -> Iterator[Metric]:
    labels = ["feed", "url"]
    failures = GaugeMetricFamily(
        "digestd_feed_failures",
        "Failed polls in a row of each feed (0: the last worked)",
        labels=labels,
    )
    success = GaugeMetricFamily(
        "digestd_feed_last_success_timestamp_seconds",
        "When each feed was last polled successfully (Unix time; 0: never)",
        labels=labels,
    )
    for feed_id, url, failed, last_success in feeds:
        # a password in a feed's URL stays out of the scrape, as it stays out of the logs
        names = [str(feed_id), redact(url, addresses=False)]
        failures.add_metric(names, failed)
        success.add_metric(names, last_success.timestamp() if last_success else 0)
    yield failures
    yield success
