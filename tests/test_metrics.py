"""/metrics after a real edition: the process counters and the queue gauges agree with the
database; /healthz reports the database, the scheduler and the last SMTP success."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from digestd.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from tests.conftest import WebRig
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def _scrape(web: WebRig) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = web.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _db_count(web: WebRig, status: DeliveryStatus) -> int:
    with web.service.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == status)
            )
            or 0
        )


def test_metrics_after_an_edition_match_the_queue(web: WebRig) -> None:
    readers = [Reader(f"r{i}@example.com") for i in range(6)] + [Reader("gone@example.com")]
    with web.service.sessions.begin() as session:
        add_articles(session, hourly_articles(SEND - timedelta(days=1), SEND))
        add_readers(session, readers, SEND - timedelta(hours=2))
    web.smtp.reject["gone@example.com"] = "550 5.1.1 No such user"

    before = _scrape(web)
    assert (
        before[("digestd_messages_total", frozenset({("kind", "daily"), ("outcome", "sent")}))] == 0
    )
    report = web.portal.call(web.service.tick, SEND + timedelta(minutes=1))
    assert (report.delivered.sent, report.delivered.failed) == (6, 1)

    metrics = _scrape(web)
    sent, failed = _db_count(web, DeliveryStatus.SENT), _db_count(web, DeliveryStatus.FAILED)
    assert (sent, failed) == (6, 1)

    def m(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(labels.items()))]

    assert m("digestd_messages_total", kind="daily", outcome="sent") == sent
    assert m("digestd_messages_total", kind="daily", outcome="bounced") == failed
    assert m("digestd_messages_total", kind="weekly", outcome="sent") == 0
    edition = "digestd_last_edition_deliveries"
    assert m(edition, kind="daily", status="sent") == sent
    assert m(edition, kind="daily", status="failed") == failed
    assert m("digestd_queue", kind="daily", status="queued") == 0
    assert m("digestd_queue", kind="weekly", status="sending") == 0
    assert ("digestd_queue", frozenset({("kind", "daily"), ("status", "sent")})) not in metrics
    assert m("digestd_smtp_errors_total", code="550") == 1
    assert m("digestd_send_seconds_count") == sent + failed
    with web.service.sessions() as session:
        bounced = session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(Subscriber.status == SubscriberStatus.BOUNCED)
        )
    assert m("digestd_subscribers", status="bounced") == bounced == 1
    assert m("digestd_subscribers", status="active") == 6
    assert m("digestd_last_tick_timestamp_seconds") > 0
    assert m("digestd_last_smtp_success_timestamp_seconds") > 0


def test_healthz_reports_scheduler_and_smtp(web: WebRig) -> None:
    body = web.client.get("/healthz").json()
    assert body == {"status": "ok", "database": "ok", "scheduler": "off", "last_smtp_success": None}
    import time

    web.service.health.scheduler_started_at = time.monotonic() - 1000  # started, never ticked
    stalled = web.client.get("/healthz")
    assert stalled.status_code == 503
    assert stalled.json()["scheduler"].startswith("no scheduler pass finished for")
    web.service.health.last_tick_at = time.monotonic()
    assert web.client.get("/healthz").json()["scheduler"] == "ok"
