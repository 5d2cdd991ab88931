"""``/metrics`` in the Prometheus text format (prometheus-client).

Two kinds of numbers:

* what the database says *now*, read at scrape time, so every worker reports the same
  truth: subscribers by status, the rows waiting or in flight by edition kind, and the
  newest edition of each kind by status;
* what *this process* did since it started: messages by edition kind and outcome, SMTP
  errors by reply code, how long a message takes to hand over, the last finished tick
  and the last SMTP success (Prometheus sums these across workers).

Each :class:`Metrics` has its own registry (not the library's global one), so tests and
several services in one process never mix their numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from digestd.models import DeliveryStatus, EditionKind, SubscriberStatus
from digestd.ops import counts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("sent", "bounced", "failed", "deferred", "skipped")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "digestd_messages",
            "Messages handled by this process, by edition kind and outcome "
            "(bounced: refused with 5xx; failed: gave up after retries)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self._messages: dict[tuple[str, str], Any] = {}
        for kind in EditionKind:
            for outcome in OUTCOMES:  # present at 0 from the start
                self._messages[(str(kind), outcome)] = self.messages.labels(str(kind), outcome)
        self.smtp_errors = Counter(
            "digestd_smtp_errors",
            "SMTP failures by reply code (none: no reply, e.g. a drop)",
            ["code"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "digestd_send_seconds",
            "Time to hand one message to the SMTP server",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.last_tick = Gauge(
            "digestd_last_tick_timestamp_seconds",
            "When this process last finished a scheduler pass (Unix time)",
            registry=self.registry,
        )
        self.last_smtp_success = Gauge(
            "digestd_last_smtp_success_timestamp_seconds",
            "When this process last handed a message over successfully (Unix time)",
            registry=self.registry,
        )
        self.last_smtp_success_at: float | None = None
        self.sending_pauses = Counter(
            "digestd_sending_pauses",
            "Times sending paused after a burst of failures",
            registry=self.registry,
        )
        self.signup_emails_capped = Counter(
            "digestd_signup_emails_capped",
            "Signup emails (confirmations, fresh links) not sent because the hourly cap "
            "for all addresses together was reached",
            registry=self.registry,
        )

    def message(self, kind: str, outcome: str) -> None:
        """Count one message (the labelled child looked up once, not per message)."""
        child = self._messages.get((kind, outcome))
        if child is None:
            child = self._messages[(kind, outcome)] = self.messages.labels(kind, outcome)
        child.inc()

    def smtp_succeeded(self) -> None:
        self.last_smtp_success_at = time.time()
        self.last_smtp_success.set(self.last_smtp_success_at)

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Add the database's current numbers to every scrape."""
        self.registry.register(_DatabaseCollector(sessions))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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
