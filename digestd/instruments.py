"""What this process counts as it works (prometheus-client instruments): messages by
edition kind and outcome, SMTP errors by reply code, how long a message takes to hand
over, the last finished tick and the last SMTP success, signups, confirmations and
unsubscribes, which digestd this is (``digestd_build_info``) and the standard ``process_*``
metrics (CPU, memory, open files). Prometheus sums them across workers;
:mod:`digestd.ops.metrics` adds what the database says at scrape time.

Each :class:`Metrics` has its own registry (not the library's global one), so tests and
several services in one process never mix their numbers.
"""

from __future__ import annotations

import platform
import time
from collections import Counter as Tallies
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from digestd import __version__
from digestd.models import EditionKind

OUTCOMES = ("sent", "bounced", "failed", "deferred", "skipped")
# The reader's link, their page, mailto:, or an operator on the admin page.
UNSUBSCRIBED_VIA = ("link", "preferences", "mail", "admin")
CLICK_ANSWERS = ("article", "archive", "refused")  # a tracked link: to the story, the archive, 400


@dataclass
class Tally:
    """What sending counted in the tick's helper process since it last told the sending
    process, which adds it to its own instruments: Prometheus scrapes that one only."""

    messages: Tallies[tuple[str, str]] = field(default_factory=Tallies)
    smtp_errors: Tallies[str] = field(default_factory=Tallies)
    send_seconds: list[float] = field(default_factory=list)
    pauses: int = 0
    last_smtp_success_at: float | None = None


class Metrics:
    def __init__(self) -> None:
        self.tally: Tally | None = None  # also counted there (in a helper process), if set
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "digestd_messages",
            "Messages handled by this process, by edition kind and outcome "
            "(bounced: the address or mailbox refused it, a hard or soft bounce; failed: "
            "any other end without delivery, a policy refusal or retries run out)",
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
        self._readers(self.registry)
        Info("digestd_build", "The digestd running", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )
        ProcessCollector(registry=self.registry)

    def _readers(self, registry: CollectorRegistry) -> None:
        self.signups = Counter(
            "digestd_signups",
            "Signups that asked for a confirmation email (new, or back after unsubscribing)",
            registry=registry,
        )
        self.confirmations = Counter(
            "digestd_confirmations",
            "Subscriptions confirmed by following the emailed link",
            registry=registry,
        )
        self.unsubscribes = Counter(
            "digestd_unsubscribes",
            "Readers unsubscribed, by how (link: the email's link or one-click; preferences: "
            "their page; mail: List-Unsubscribe mailto:; admin: an operator)",
            ["via"],
            registry=registry,
        )
        for via in UNSUBSCRIBED_VIA:  # present at 0 from the start
            self.unsubscribes.labels(via)
        self.clicks = Counter(
            "digestd_clicks",
            "Tracked links followed (GET /c/), by answer: article (303 to the story), "
            "archive (the story or the email is gone), refused (a spoiled link: 400)",
            ["answer"],
            registry=registry,
        )
        for answer in CLICK_ANSWERS:  # present at 0 from the start
            self.clicks.labels(answer)

    def message(self, kind: str, outcome: str, count: int = 1) -> None:
        """Count ``count`` messages (the labelled child looked up once, not per message)."""
        child = self._messages.get((kind, outcome))
        if child is None:
            child = self._messages[(kind, outcome)] = self.messages.labels(kind, outcome)
        child.inc(count)
        if self.tally is not None:
            self.tally.messages[(kind, outcome)] += count

    def smtp_error(self, code: str) -> None:
        self.smtp_errors.labels(code).inc()
        if self.tally is not None:
            self.tally.smtp_errors[code] += 1

    def handed_over(self, seconds: float) -> None:
        self.send_seconds.observe(seconds)
        if self.tally is not None:
            self.tally.send_seconds.append(seconds)

    def sending_paused(self) -> None:
        self.sending_pauses.inc()
        if self.tally is not None:
            self.tally.pauses += 1

    def smtp_succeeded(self, at: float | None = None) -> None:
        self.last_smtp_success_at = time.time() if at is None else at
        self.last_smtp_success.set(self.last_smtp_success_at)
        if self.tally is not None:
            self.tally.last_smtp_success_at = self.last_smtp_success_at

    def take_tally(self) -> Tally:
        """What was counted since the last take (counting goes on in a fresh one)."""
        taken, self.tally = self.tally or Tally(), Tally()
        return taken

    def absorb(self, tally: Tally) -> None:
        """Count what a helper process's sending counted, as if it had happened here."""
        for (kind, outcome), count in tally.messages.items():
            self.message(kind, outcome, count)
        for code, count in tally.smtp_errors.items():
            self.smtp_errors.labels(code).inc(count)
        for seconds in tally.send_seconds:
            self.send_seconds.observe(seconds)
        if tally.pauses:
            self.sending_pauses.inc(tally.pauses)
        latest = tally.last_smtp_success_at
        if latest is not None and latest > (self.last_smtp_success_at or 0.0):
            self.smtp_succeeded(latest)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
