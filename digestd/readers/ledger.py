"""The bounce ledger (``bounces``): every refusal and every report is written here, then
acted on as the policy says (:mod:`digestd.readers.bounce_policy`): a hard bounce or a
complaint suppresses the address, soft bounces are counted from the ledger.

Diagnostics are kept with the address replaced by ``<…@domain>``, and the reader's mailbox
name wherever it stands alone (a local delivery's report says ``unknown user: "ann"``): the
row says which delivery and subscriber it is about, and erasure leaves no name behind.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from digestd.db import storable
from digestd.models import (
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)
from digestd.readers.bounce_policy import SOFT_BOUNCE_LIMIT, Kind
from digestd.readers.suppression import suppress

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"[^\s<>\"():;,\[\]]+@([A-Za-z0-9.\-_\u0080-\uffff]+)")
DIAGNOSTIC_CHARS = 1000


@dataclass(frozen=True)
class Event:
    """One row to write: what happened and where it was read."""

    kind: Kind
    source: str  # smtp (a synchronous reply) | dsn | arf | mail (a bounce that is no report)
    channel: str  # smtp | api (POST /api/bounces) | lmtp (digestd's inbound listener)
    status: str | None = None  # 5.1.1, a bare 550, or an ARF Feedback-Type
    diagnostic: str | None = None
    reporting_mta: str | None = None
    report_id: str | None = None  # which report (readers.bounces.report_id); None: SMTP


def redact(text: str | None, mailbox: str = "") -> str | None:
    """The text without addresses' mailbox names (``<gone@example.com>`` →
    ``<…@example.com>``), nor ``mailbox`` where it stands alone."""
    if text is None:
        return None
    text = _ADDRESS.sub(lambda m: f"…@{m.group(1)}", text)
    if mailbox:
        alone = re.compile(rf"(?<![\w.+'-]){re.escape(mailbox)}(?![\w.+'-])", re.IGNORECASE)
        text = alone.sub("…", text)
    return text


def _stored(text: str | None, limit: int) -> str | None:
    # A NUL in a report (PostgreSQL cannot store it) failed its transaction at every retry.
    return storable(text, limit) if text else None


def _diagnostic(text: str | None, mailbox: str) -> str | None:
    # Cut before it is redacted: the address pattern backtracks over a run with no "@"
    # (quadratic: 60 000 characters held the daemon 14 s). Twice what is kept, since
    # redacting shortens it.
    return redact(text[: 2 * DIAGNOSTIC_CHARS], mailbox) if text else None


def record(
    session: Session,
    event: Event,
    *,
    delivery_id: int | None,
    subscriber_id: int | None,
    now: datetime,
) -> bool:
    """Write ``event`` and act on it; True when the subscriber is suppressed afterwards."""
    reader = session.get(Subscriber, subscriber_id) if subscriber_id is not None else None
    mailbox = reader.email.rpartition("@")[0] if reader is not None else ""
    session.add(
        BounceEvent(
            delivery_id=delivery_id,
            subscriber_id=subscriber_id,
            kind=event.kind,
            status=_stored(event.status, 20),
            diagnostic=_stored(_diagnostic(event.diagnostic, mailbox), DIAGNOSTIC_CHARS),
            reporting_mta=_stored(event.reporting_mta, 255),
            source=event.source,
            channel=event.channel,
            report_id=event.report_id,
            created_at=now,
        )
    )
    session.flush()  # the soft-bounce count below reads this row
    suppressed = subscriber_id is not None and _act(session, event.kind, subscriber_id, now)
    about = {"delivery": delivery_id, "subscriber": subscriber_id, "status": event.status}
    log.info(
        "bounce",
        extra={
            "kind": event.kind,
            "source": event.source,
            "channel": event.channel,
            **{name: value for name, value in about.items() if value is not None},
            "suppressed": suppressed,
        },
    )
    return suppressed


def _act(session: Session, kind: Kind, subscriber_id: int, now: datetime) -> bool:
    if kind is Kind.COMPLAINT and not is_suppressed(session, subscriber_id):
        suppress(
            session, subscriber_id, SubscriberStatus.COMPLAINED, SuppressionReason.COMPLAINT, now
        )
    elif kind is Kind.HARD and not is_suppressed(session, subscriber_id):
        suppress(
            session, subscriber_id, SubscriberStatus.BOUNCED, SuppressionReason.HARD_BOUNCE, now
        )
    elif kind is Kind.SOFT:
        _count_soft_bounces(session, subscriber_id, now)
    return is_suppressed(session, subscriber_id)


def already_recorded(session: Session, delivery_id: int, kind: Kind, source: str) -> bool:
    """A report about this delivery with this meaning was processed before (a repeat)."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    BounceEvent.delivery_id == delivery_id,
                    BounceEvent.kind == kind,
                    BounceEvent.source == source,
                )
            )
        )
    )


def report_seen(
    session: Session, report_id: str, delivery_id: int | None, subscriber_id: int | None
) -> bool:
    """This report was recorded before about the same delivery and reader (None: about no
    delivery, a reader's other mail; about nobody, unmatched)."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    BounceEvent.report_id == report_id,
                    _is(BounceEvent.delivery_id, delivery_id),
                    _is(BounceEvent.subscriber_id, subscriber_id),
                )
            )
        )
    )


def _is(column: InstrumentedAttribute[int | None], value: int | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def is_suppressed(session: Session, subscriber_id: int) -> bool:
    status = session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id))
    return status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


def soft_run(session: Session, subscriber_id: int) -> int:
    """The subscriber's current run of soft bounces, counted in distinct days.

    Read from their latest settled deliveries, newest first: one with a soft bounce in the
    ledger extends the run; one accepted without any bounce ends it; a failure that says
    nothing about the mailbox (a content refusal, a message that could not be built) does
    neither. A relay's 250 says nothing yet (a DSN may follow), so each new soft bounce
    recounts rather than a counter being reset on acceptance.
    """
    soft = exists().where(
        and_(BounceEvent.delivery_id == Delivery.id, BounceEvent.kind == Kind.SOFT)
    )
    recent = session.execute(
        select(Delivery.status, Delivery.due_at, soft)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.FAILED]),
        )
        .order_by(Delivery.due_at.desc())
        .limit(SOFT_BOUNCE_LIMIT * 4)
    ).all()
    days: set[object] = set()
    for status, due_at, bounced in recent:
        if bounced:
            days.add(due_at.date())
        elif status == DeliveryStatus.SENT:
            break
    return len(days)


def _count_soft_bounces(session: Session, subscriber_id: int, now: datetime) -> None:
    run = soft_run(session, subscriber_id)
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(soft_bounces=run)
        .execution_options(synchronize_session=False)
    )
    if run >= SOFT_BOUNCE_LIMIT and not is_suppressed(session, subscriber_id):
        log.info(
            "suppress",
            extra={
                "subscriber": subscriber_id,
                "reason": SuppressionReason.SOFT_BOUNCES,
                "days_in_a_row": run,
            },
        )
        suppress(
            session, subscriber_id, SubscriberStatus.BOUNCED, SuppressionReason.SOFT_BOUNCES, now
        )
