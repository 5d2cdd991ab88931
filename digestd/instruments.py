"""What this process counts as it works (prometheus-client instruments): messages by
edition kind and outcome, SMTP errors by reply code, how long a message takes to hand
over, the last finished tick and the last SMTP success. Prometheus sums them across
workers; :mod:`digestd.ops.metrics` adds what the database says at scrape time.

Each :class:`Metrics` has its own registry (not the library's global one), so tests and
several services in one process never mix their numbers.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from digestd.models import EditionKind

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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
