"""Cadence: on Sunday a reader of both gets the recap only (unless DIGESTD_SUNDAY_DAILY),
and a pause with an end resumes by itself. Real database, the mail catcher, ticks at
injected instants."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from digestd.config import load_settings
from digestd.delivery.catcher import MailCatcher
from digestd.models import Delivery, Edition, Subscriber, SubscriberStatus
from digestd.readers.lifecycle import pause
from digestd.service import Service
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SATURDAY = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)  # 07:00 UTC, the daily's time
SUNDAY = SATURDAY + timedelta(days=1)


def _service(env: dict[str, str], **extra: str) -> Service:
    settings = load_settings({**env, **extra})
    return Service.build(settings, transport=MailCatcher(settings.mail_dir))


def _ticks(service: Service, instants: list[datetime]) -> list[str]:
    """Each tick's summary line."""

    async def run() -> list[str]:
        try:
            return [(await service.tick(now)).summary() for now in instants]
        finally:
            await service.close()

    return asyncio.run(run())


def _mail(service: Service) -> list[str]:
    """Subjects' first words of what was caught, in order (Daily/Week)."""
    found = sorted(Path(service.settings.mail_dir).glob("*.eml"))
    return [p.read_bytes().split(b"\r\nSubject: ", 1)[1].split(b" ", 1)[0].decode() for p in found]


def _seed(service: Service, reader: Reader) -> None:
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SATURDAY - timedelta(days=7), SUNDAY))
        add_readers(session, [reader], SATURDAY - timedelta(hours=1))


def _editions(service: Service) -> list[tuple[str, str, str, str | None]]:
    with service.sessions() as session:
        rows = session.execute(
            select(Edition.kind, Edition.period, Delivery.status, Delivery.last_error)
            .join(Delivery, Delivery.edition_id == Edition.id)
            .order_by(Edition.period, Edition.kind)
        )
        return [(kind, period, status, why) for kind, period, status, why in rows]


def test_on_sunday_a_reader_of_both_gets_the_recap_only(env: dict[str, str]) -> None:
    service = _service(env)
    _seed(service, Reader("both@example.com", daily=True, weekly=True))
    summaries = _ticks(service, [SATURDAY, SUNDAY, SUNDAY + timedelta(hours=1)])
    # Counted as what it is, not as a reader with nothing new ("empty")
    assert "skipped 0 empty + 0 late + 1 recap instead, sent 0" in summaries[1]
    assert _editions(service) == [
        ("daily", "2026-11-28", "sent", None),
        ("daily", "2026-11-29", "skipped", "Sunday: the weekly recap goes out instead"),
        ("weekly", "2026-11-29", "sent", None),
    ]
    assert len(_mail(service)) == 2  # Saturday's daily, Sunday's recap


def test_sunday_daily_true_sends_both(env: dict[str, str]) -> None:
    service = _service(env, DIGESTD_SUNDAY_DAILY="true")
    _seed(service, Reader("both@example.com", daily=True, weekly=True))
    _ticks(service, [SUNDAY, SUNDAY + timedelta(hours=1)])
    assert [status for _, _, status, _ in _editions(service)] == ["sent", "sent"]


def test_a_daily_only_reader_still_gets_sundays_daily(env: dict[str, str]) -> None:
    service = _service(env)
    _seed(service, Reader("daily@example.com", daily=True, weekly=False))
    _ticks(service, [SUNDAY])
    assert _editions(service) == [("daily", "2026-11-29", "sent", None)]


def test_a_pause_with_an_end_sends_nothing_then_resumes_by_itself(env: dict[str, str]) -> None:
    service = _service(env)
    _seed(service, Reader("ann@example.com"))
    until = SATURDAY + timedelta(days=14, hours=-7)  # two weeks, ending at midnight
    with service.sessions.begin() as session:
        ann = session.scalars(select(Subscriber)).one()
        pause(ann, until=until)
    # A tick at each 07:00, and one at the pause's end (the daemon ticks every minute).
    days = sorted([SATURDAY + timedelta(days=n) for n in range(16)] + [until])
    with service.sessions.begin() as session:  # articles for every day of the fortnight
        add_articles(session, hourly_articles(SUNDAY, days[-1] + timedelta(hours=1)))
    _ticks(service, days)
    periods = [(period, status) for kind, period, status, _ in _editions(service)]
    # Nothing for the fortnight; resumed at the end, the next 07:00 is sent.
    assert periods == [("2026-12-12", "sent"), ("2026-12-13", "sent")]
    with service.sessions() as session:
        ann = session.scalars(select(Subscriber)).one()
    assert ann.status == SubscriberStatus.ACTIVE and ann.paused_until is None
