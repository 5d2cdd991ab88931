"""Deliver the send queue: claim due rows, compose each message, push it, record the outcome.

Claiming: rows are moved ``queued → sending`` with a lease (``lease_expires_at``) by a
guarded UPDATE (PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` so workers never wait on each
other). A crash after a message left but before its outcome was recorded re-sends it when
the lease expires: the in-flight batch may repeat, nothing is ever skipped. Message-IDs are
deterministic per delivery, so a repeat carries the same Message-ID as the original.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import format_datetime, formataddr
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from digestd.compose import MessageTemplate, Personal, ascii_address
from digestd.config import Settings
from digestd.editions import article_ids
from digestd.errors import DeliveryError, PermanentDeliveryError
from digestd.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Digest,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from digestd.presentation import Site, digest_context
from digestd.render import Renderer
from digestd.subscribers import email_hash
from digestd.tokens import Purpose, Tokens
from digestd.transport import Transport

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
BATCH = 500
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    subscriber_public_id: str
    email: str
    status: str
    digest_id: int | None
    kind: str
    period: str
    due_at: datetime
    attempts: int


class Links:
    """The per-recipient URLs of one email."""

    def __init__(self, settings: Settings, tokens: Tokens) -> None:
        self.base = settings.base_url
        self.tokens = tokens
        self.mailto = f"unsubscribe@{settings.from_domain}"

    def url(self, purpose: Purpose, payload: str) -> str:
        return f"{self.base}/{purpose}/{self.tokens.make(purpose, payload)}"

    def for_subscriber(self, public_id: str, delivery_id: int | None = None) -> dict[str, str]:
        links = {
            "unsubscribe": self.url(Purpose.UNSUBSCRIBE, public_id),
            "preferences": self.url(Purpose.PREFERENCES, public_id),
            "view": "",
        }
        if delivery_id is not None:
            links["view"] = self.url(Purpose.VIEW, f"{public_id}/{delivery_id}")
        return links


class Composer:
    """Renders each digest once (cached) and makes each recipient's bytes by substitution."""

    def __init__(
        self,
        settings: Settings,
        tokens: Tokens,
        renderer: Renderer | None = None,
        cache_size: int = 2048,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.links = Links(settings, tokens)
        self.renderer = renderer or Renderer()
        self.site = Site(settings.site_name, settings.base_url, settings.postal_address)
        self.from_header = formataddr((settings.from_name, settings.from_address))
        self._templates: dict[int, MessageTemplate] = {}
        self._cache_size = cache_size

    def template(self, session: Session, digest_id: int, kind: str, period: str) -> MessageTemplate:
        template = self._templates.get(digest_id)
        if template is None:
            digest = session.get(Digest, digest_id)
            assert digest is not None
            articles = {
                a.id: a
                for a in session.scalars(
                    select(Article).where(Article.id.in_(article_ids(digest.layout)))
                )
            }
            context = digest_context(
                EditionKind(kind), date.fromisoformat(period), digest.layout, articles, self.site
            )
            rendered = self.renderer.render(kind, context)
            template = MessageTemplate(
                rendered,
                from_header=self.from_header,
                headers=[("List-Id", self.settings.list_id)],
            )
            if len(self._templates) >= self._cache_size:
                self._templates.pop(next(iter(self._templates)))
            self._templates[digest_id] = template
        return template

    def compose(self, template: MessageTemplate, job: _Job, now: datetime) -> bytes:
        personal = Personal(
            to=ascii_address(job.email),
            message_id=f"<{job.kind}.{job.period}.{job.delivery_id}@{self.settings.from_domain}>",
            date=format_datetime(now),
            links=self.links.for_subscriber(job.subscriber_public_id, job.delivery_id),
            unsubscribe_mailto=f"{self.links.mailto}?subject=unsubscribe",
        )
        return template.compose(personal)

    def envelope_from(self, delivery_id: int) -> str:
        """VERP: a bounce names the delivery it is about, signed so it cannot be forged."""
        return f"bounces+{self.tokens.bounce_tag(delivery_id)}@{self.settings.from_domain}"


class Sender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        composer: Composer,
        transport: Transport,
        *,
        catchup: timedelta,
        worker: str = "digestd",
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sessions = sessions
        self.composer = composer
        self.transport = transport
        self.catchup = catchup
        self.worker = worker
        self.rng = rng

    async def deliver_due(
        self, now: datetime, should_stop: Callable[[], bool] = lambda: False
    ) -> DeliveryReport:
        """Drain every row due at ``now``; rows deferred to later stay queued.

        ``should_stop`` is checked between batches, so SIGTERM never abandons a claimed batch.
        """
        report = DeliveryReport()
        while not should_stop() and await self.deliver_batch(now, report):
            pass
        return report

    async def deliver_batch(self, now: datetime, report: DeliveryReport) -> bool:
        jobs = self._claim(now)
        if not jobs:
            return False
        outcomes: list[dict[str, Any]] = []
        with self.sessions() as session:
            prepared = [(job, self._prepare(session, job, now)) for job in jobs]
        results = await asyncio.gather(*(self._send(job, data) for job, data in prepared))
        for (job, _), result in zip(prepared, results, strict=True):
            outcomes.append(self._outcome(job, result, now, report))
        self._record(outcomes, jobs, results, now)
        return True

    def _claim(self, now: datetime) -> list[_Job]:
        with self.sessions.begin() as session:
            claimable = (
                select(Delivery.id)
                .where(
                    or_(
                        (Delivery.status == DeliveryStatus.QUEUED)
                        & (Delivery.next_attempt_at <= now),
                        (Delivery.status == DeliveryStatus.SENDING)
                        & (Delivery.lease_expires_at < now),
                    )
                )
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(BATCH)
            )
            if session.get_bind().dialect.name == "postgresql":
                claimable = claimable.with_for_update(skip_locked=True)
            ids = list(session.scalars(claimable))
            if not ids:
                return []
            # Guarded: only rows still claimable move; on SQLite the write lock serialises
            # workers, on PostgreSQL SKIP LOCKED already kept them apart.
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(
                    status=DeliveryStatus.SENDING,
                    lease_expires_at=now + LEASE,
                    attempts=Delivery.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                select(
                    Delivery.id,
                    Subscriber.public_id,
                    Subscriber.email,
                    Subscriber.status,
                    Delivery.digest_id,
                    Edition.kind,
                    Edition.period,
                    Delivery.due_at,
                    Delivery.attempts,
                )
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(Delivery.id.in_(ids))
                .order_by(Delivery.digest_id, Delivery.id)
            ).all()
            return [_Job(*row) for row in rows]

    def _prepare(self, session: Session, job: _Job, now: datetime) -> bytes | str:
        """The message bytes, or why this row will not be sent."""
        if job.status != SubscriberStatus.ACTIVE:
            return f"subscriber is {job.status}"
        if job.digest_id is None:
            return "no content"
        template = self.composer.template(session, job.digest_id, job.kind, job.period)
        return self.composer.compose(template, job, now)

    async def _send(self, job: _Job, data: bytes | str) -> str | DeliveryError | None:
        if isinstance(data, str):
            return None
        try:
            return await self.transport.send(
                self.composer.envelope_from(job.delivery_id), ascii_address(job.email), data
            )
        except DeliveryError as exc:
            return exc

    def _outcome(
        self, job: _Job, result: str | DeliveryError | None, now: datetime, report: DeliveryReport
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"id": job.delivery_id, "lease_expires_at": None}
        if result is None:
            report.skipped += 1
            row.update(status=DeliveryStatus.SKIPPED, last_error="subscriber no longer active")
        elif isinstance(result, str):
            report.sent += 1
            row.update(
                status=DeliveryStatus.SENT,
                sent_at=now,
                smtp_reply=result[:500],
                message_id=f"<{job.kind}.{job.period}.{job.delivery_id}@"
                f"{self.composer.settings.from_domain}>",
            )
        elif isinstance(result, PermanentDeliveryError) or now - job.due_at > self.catchup:
            report.failed += 1
            report.errors.append(str(result))
            row.update(
                status=DeliveryStatus.FAILED,
                last_error=str(result)[:1000],
                smtp_reply=str(result)[:500],
            )
        else:
            report.deferred += 1
            row.update(
                status=DeliveryStatus.QUEUED,
                last_error=str(result)[:1000],
                next_attempt_at=now + self.backoff(job.attempts),
            )
        return row

    def backoff(self, attempts: int) -> timedelta:
        """Exponential with ±20 % jitter, so a fleet of deferred messages does not retry in step."""
        delay: timedelta = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
        return delay * (0.8 + 0.4 * self.rng())

    def _record(
        self,
        outcomes: list[dict[str, Any]],
        jobs: Sequence[_Job],
        results: Sequence[object],
        now: datetime,
    ) -> None:
        with self.sessions.begin() as session:
            for row in outcomes:
                values = {k: v for k, v in row.items() if k != "id"}
                session.execute(
                    update(Delivery)
                    .where(Delivery.id == row["id"])
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
            for job, result in zip(jobs, results, strict=True):
                if isinstance(result, PermanentDeliveryError):
                    _hard_bounce(session, job, now)


def _hard_bounce(session: Session, job: _Job, now: datetime) -> None:
    """A 5xx for the recipient: stop mailing the address (SPEC §7)."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.public_id == job.subscriber_public_id)
        .values(status=SubscriberStatus.BOUNCED, next_daily_at=None, next_weekly_at=None)
        .execution_options(synchronize_session=False)
    )
    if session.get(Suppression, email_hash(job.email)) is None:
        session.add(
            Suppression(email_hash=email_hash(job.email), reason="hard-bounce", created_at=now)
        )
    log.info("hard bounce for delivery %s: address suppressed", job.delivery_id)
