"""/metrics after a real edition: the process counters and the queue gauges agree with the
database; only a scraper with the token, or this machine when there is none, reads them.
/healthz reports the database, the scheduler and the last SMTP success."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select
from starlette.testclient import TestClient

from digestd import __version__
from digestd.config import load_settings
from digestd.models import Delivery, DeliveryStatus, Feed, Subscriber, SubscriberStatus
from digestd.service import Service
from digestd.web.app import create_app
from tests.conftest import WebRig
from tests.seeding import Reader, add_articles, add_readers, hourly_articles
from tests.web_helpers import links_in, signup_form

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
TOKEN = "metrics-" + "m" * 24
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web_env(web_env: dict[str, str]) -> dict[str, str]:
    return {**web_env, "DIGESTD_METRICS_TOKEN": TOKEN}


def _scrape(web: WebRig) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = web.client.get("/metrics", headers=SCRAPER)
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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthz_reports_scheduler_and_smtp(web: WebRig) -> None:
    body = web.client.get("/healthz").json()
    assert body == {"status": "ok", "database": "ok", "scheduler": "off", "last_smtp_success": None}
    health = web.service.health
    health.clock = clock = Clock()
    health.scheduler_started_at = clock.now
    clock.now += 1000  # started, never a sign of progress since
    stalled = web.client.get("/healthz")
    assert stalled.status_code == 503
    assert stalled.json()["scheduler"] == "no progress for 1000 s"
    assert web.client.get("/healthz?live").status_code == 503
    health.beat()
    assert web.client.get("/healthz").json()["scheduler"] == "ok"


def test_each_message_handed_over_is_a_sign_of_progress(web: WebRig) -> None:
    """Progress, not a finished tick: a long edition through a slow relay stays alive as
    long as messages keep leaving."""
    readers = [Reader(f"r{i}@example.com") for i in range(5)]
    with web.service.sessions.begin() as session:
        add_articles(session, hourly_articles(SEND - timedelta(days=1), SEND))
        add_readers(session, readers, SEND - timedelta(hours=2))
    beats: list[int] = []
    web.service.sender.heartbeat = lambda: beats.append(1)
    report = web.portal.call(web.service.tick, SEND + timedelta(minutes=1))
    assert report.delivered.sent == 5
    assert len(beats) >= 5 + 1  # each message, and each claim


def test_a_live_probe_does_not_ask_the_database(web: WebRig) -> None:
    web.service.engine.dispose()
    web.service.sessions.configure(bind=create_engine("sqlite:////nonexistent/dir/x.db"))
    assert web.client.get("/healthz").status_code == 503
    live = web.client.get("/healthz?live")
    assert live.status_code == 200 and "database" not in live.json()


@contextmanager
def _client_at(env: dict[str, str], address: str) -> Iterator[TestClient]:
    """The app as seen from ``address`` (the TCP peer)."""
    service = Service.build(load_settings(env))
    try:
        app = create_app(service)
        with TestClient(app, base_url="http://127.0.0.1:8080", client=(address, 40000)) as client:
            yield client
    finally:
        service.engine.dispose()


def test_metrics_without_a_token_answer_only_this_machine(env: dict[str, str]) -> None:
    for local in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        with _client_at(env, local) as client:
            answer = client.get("/metrics")
            assert answer.status_code == 200, local
            assert "digestd_subscribers" in answer.text
            # A proxy on this machine relaying someone is not this machine.
            relayed = client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.7"})
            assert relayed.status_code == 403
            # Nor is a web page whose host name was rebound to 127.0.0.1.
            rebound = client.get("/metrics", headers={"Host": "attacker.example:8080"})
            assert rebound.status_code == 403
    for outside in ("203.0.113.10", "10.0.0.8", "2001:db8::1", "::ffff:203.0.113.10"):
        with _client_at(env, outside) as client:
            answer = client.get("/metrics")
            assert answer.status_code == 403, outside
            assert "digestd_" not in answer.text
            assert "DIGESTD_METRICS_TOKEN" in answer.text


def test_metrics_with_a_token_need_it_from_everyone_loopback_included(
    env: dict[str, str],
) -> None:
    env = {**env, "DIGESTD_METRICS_TOKEN": TOKEN}
    wrong = [
        {},
        {"Authorization": "Bearer " + TOKEN[:-1]},
        {"Authorization": "Bearer " + TOKEN + "x"},
        {"Authorization": "Basic " + TOKEN},
        {"Authorization": TOKEN},
    ]
    for address in ("127.0.0.1", "203.0.113.10"):
        with _client_at(env, address) as client:
            for headers in wrong:
                answer = client.get("/metrics", headers=headers)
                assert answer.status_code == 401, (address, headers)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert "digestd_" not in answer.text
            answer = client.get("/metrics", headers={"Authorization": f"bearer  {TOKEN} "})
            assert answer.status_code == 200
            assert "digestd_subscribers" in answer.text


def _families(web: WebRig) -> dict[str, Metric]:
    answer = web.client.get("/metrics", headers=SCRAPER)
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def test_signups_confirmations_and_unsubscribes_are_counted(web: WebRig) -> None:
    def counts() -> tuple[float, ...]:
        found = _scrape(web)
        by_via = [found[("digestd_unsubscribes_total", frozenset({("via", v)}))] for v in VIA]
        return (
            found[("digestd_signups_total", frozenset())],
            found[("digestd_confirmations_total", frozenset())],
            *by_via,
        )

    VIA = ("link", "preferences", "mail")
    assert counts() == (0, 0, 0, 0, 0)
    for email in ("ann@example.com", "bob@example.com"):
        signup_form(web, email)
        links = links_in(web.smtp.messages[-1].data)
        assert web.client.get(links["confirm"]).status_code == 200
        assert web.client.get(links["confirm"]).status_code == 200  # again: no new count
    signup_form(web, "cy@example.com")  # never confirmed
    one_click = {"List-Unsubscribe": "One-Click"}
    for _ in range(2):  # the second changes nothing and counts nothing
        assert web.client.post(links["unsubscribe"], data=one_click).status_code == 200
    assert web.status("bob@example.com") == "unsubscribed"
    assert counts() == (3, 2, 1, 0, 0)
    families = _families(web)
    for name in ("digestd_signups", "digestd_confirmations", "digestd_unsubscribes"):
        assert families[name].type == "counter"


def test_each_feed_reports_its_failures_in_a_row_and_last_success(web: WebRig) -> None:
    worked = SEND - timedelta(hours=1)
    with web.service.sessions.begin() as session:
        session.add_all(
            [
                Feed(
                    url="https://news.example.org/rss",
                    category="ai",
                    failures=0,
                    last_success_at=worked,
                ),
                Feed(url="https://bot:s3cret@feeds.example.net/atom", category="ai", failures=4),
            ]
        )
    metrics = _scrape(web)
    with web.service.sessions() as session:
        ids = dict(session.execute(select(Feed.url, Feed.id)).all())

    def m(name: str, url: str, shown: str | None = None) -> float:
        labels = {("feed", str(ids[url])), ("url", shown or url)}
        return metrics[(name, frozenset(labels))]

    good, broken = "https://news.example.org/rss", "https://bot:s3cret@feeds.example.net/atom"
    hidden = "https://bot:***@feeds.example.net/atom"  # a password stays out of the scrape
    assert m("digestd_feed_failures", good) == 0
    assert m("digestd_feed_last_success_timestamp_seconds", good) == worked.timestamp()
    assert m("digestd_feed_failures", broken, hidden) == 4
    assert m("digestd_feed_last_success_timestamp_seconds", broken, hidden) == 0  # never
    assert "s3cret" not in web.client.get("/metrics", headers=SCRAPER).text
    families = _families(web)
    assert families["digestd_feed_failures"].type == "gauge"
    assert families["digestd_feed_last_success_timestamp_seconds"].type == "gauge"


def test_build_info_and_the_standard_process_metrics(web: WebRig) -> None:
    families = _families(web)
    assert families["digestd_build_info"].type == "gauge"  # an info metric, in 0.0.4 text
    (build,) = families["digestd_build_info"].samples
    assert build.value == 1
    assert build.labels == {"version": __version__, "python": platform.python_version()}
    assert families["process_cpu_seconds"].type == "counter"
    for gauge in ("process_resident_memory_bytes", "process_start_time_seconds"):
        assert families[gauge].type == "gauge"
        assert families[gauge].samples[0].value > 0
