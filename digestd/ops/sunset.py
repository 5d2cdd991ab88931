"""The sunset's pass (:mod:`digestd.readers.sunset`) and its two emails (template family
``sunset``): "still want these?" and "we've paused your digests". Run by the tick at most
once an :data:`EVERY` per process; every step is claimed in the database, so two processes
never email a reader twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.delivery.transport import Transport
from digestd.errors import DeliveryError
from digestd.mail.composer import Composer
from digestd.mail.presentation import Site, names_of
from digestd.mail.render import Renderer
from digestd.mail.template import MessageTemplate
from digestd.mail.wire import ascii_address
from digestd.models import Subscriber
from digestd.readers import sunset
from digestd.readers.lifecycle import Schedule
from digestd.tokens import Purpose

log = logging.getLogger(__name__)
EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class Reader:
    """What an email needs of a reader, read while their row was claimed."""

    id: int
    email: str
    public_id: str
    categories: list[str]
    daily: bool

    @classmethod
    def of(cls, subscriber: Subscriber) -> Reader:
        return cls(
            subscriber.id,
            subscriber.email,
            subscriber.public_id,
            subscriber.category_slugs,
            subscriber.wants_daily,
        )


@dataclass
class SunsetReport:
    asked: int = 0
    weekly: int = 0
    paused: int = 0
    unsent: int = 0  # emails the relay refused (asked again next pass; pauses stay)


class Sunset:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        composer: Composer,
        transport: Transport,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.composer = composer
        self.tokens = composer.tokens
        self.transport = transport
        self.links = composer.links
        self.renderer = Renderer()
        self.schedule = Schedule(settings.daily_time, settings.weekly_time)
        self._last_run: datetime | None = None

    def due(self, now: datetime) -> bool:
        return self._last_run is None or not self._last_run <= now < self._last_run + EVERY

    async def run(self, now: datetime) -> SunsetReport:
        """One pass: ask, move to weekly, pause (reader mode only)."""
        self._last_run = now
        report = SunsetReport()
        with self.sessions.begin() as session:
            since = sunset.tracking_since(session, self.settings.track_clicks, now)
        if since is None:
            return report
        weeks = self.settings.sunset_weeks
        with self.sessions() as session:
            ids = sunset.to_ask(session, now, weeks, since)
        for subscriber_id in ids:
            with self.sessions.begin() as session:
                claimed = sunset.mark_asked(session, subscriber_id, now, weeks)
                reader = Reader.of(claimed) if claimed is not None else None
            if reader is None:
                continue
            if await self._send(reader, "asked", now):
                report.asked += 1
            else:
                report.unsent += 1
                with self.sessions.begin() as session:
                    sunset.unmark_asked(session, reader.id, now)
        with self.sessions.begin() as session:
            report.weekly = len(sunset.move_to_weekly(session, now, self.schedule))
        with self.sessions.begin() as session:
            paused = [Reader.of(s) for s in sunset.to_pause(session, now)]
        for reader in paused:
            report.paused += 1
            if not await self._send(reader, "paused", now):
                report.unsent += 1
        if report.asked or report.weekly or report.paused:
            log.info(
                "sunset: %d asked, %d moved to weekly, %d paused",
                report.asked,
                report.weekly,
                report.paused,
            )
        return report

    def message(self, reader: Reader, stage: str, now: datetime) -> bytes:
        settings = self.settings
        links = self.links.for_subscriber(reader.public_id)
        # Stamped with the pass's time (an injected one with ``tick --now``): the answers
        # work for 60 days from the email.
        token = self.tokens.fast_maker(Purpose.ENGAGE, now.timestamp)(reader.public_id)
        answer = f"{settings.base_url}/{Purpose.ENGAGE}/{token}?choice="
        heading = "Your digests are paused" if stage == "paused" else "Still want these?"
        context = {
            "site": Site(settings.site_name, settings.base_url, settings.postal_address),
            "stage": stage,
            "heading": heading,
            "preheader": "Keep them, switch to the weekly recap, or unsubscribe."
            if stage == "asked"
            else "One click resumes them.",
            "topics": names_of(reader.categories) if reader.categories else "none",
            "daily": reader.daily,
            "weeks": settings.sunset_weeks,
            "asked_weeks": sunset.ASKED_FOR.days // 7,
            "weekly_weeks": sunset.WEEKLY_FOR.days // 7,
            "answers": {choice: answer + choice for choice in sunset.Answer},
            "footer_reason": f"You receive {settings.site_name} digests at this address.",
            "links": links,
        }
        rendered = self.renderer.render("sunset", context)
        template = MessageTemplate.build(
            rendered,
            from_header=self.composer.from_header,
            headers=[("List-Id", settings.list_id)],
        )
        return self.composer.notice(
            template,
            message_id=self.composer.notice_id("sunset"),
            email=reader.email,
            public_id=reader.public_id,
            now=now,
        )

    async def _send(self, reader: Reader, stage: str, now: datetime) -> bool:
        try:
            await self.transport.send(
                self.composer.reader_envelope_from(reader.public_id),
                ascii_address(reader.email),
                self.message(reader, stage, now),
            )
        except DeliveryError as exc:
            log.warning("sunset email to reader %d not sent: %s", reader.id, exc)
            return False
        return True
