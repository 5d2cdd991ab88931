"""Forgetting old history: settled queue rows older than ``DIGESTD_RETENTION_DAYS`` go, and
the digests and editions nothing refers to any more go with them; so do clicks and sunset
steps older than the window (a queue row's click marks go with it), clicks left in the
inbox for a day (a settling pass that kept failing), and the bounce ledger's ``unmatched``
reports (about no delivery and no reader: anyone can mail the bounces address, so they
would grow without bound).

What must outlive the window stays: rows still waiting or in flight (any age), the recent
dailies that "a daily never repeats an article" reads (8 days, far inside the window),
a reader's suppression (kept in its own table, never pruned), the ledger's rows about a
reader or a delivery (the evidence for suppressions and soft-bounce counts), and the
digests the public archive shows (each is an archive page, kept with its edition row).
"View in browser" for an edition older than the window answers that it is no longer
available.

Rows go in chunks of :data:`CHUNK`, each its own short transaction, so pruning a year of
history never holds a lock the sender or the pages wait on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.models import (
    ArchiveEdition,
    BounceEvent,
    Click,
    ClickInbox,
    Delivery,
    DeliveryStatus,
    Digest,
    Edition,
    SunsetStep,
)
from digestd.readers.bounce_policy import Kind

SETTLED = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)
CHUNK = 5000
INBOX_DAYS = timedelta(days=1)


@dataclass
class PruneReport:
    deliveries: int = 0
    digests: int = 0
    editions: int = 0
    clicks: int = 0
    unmatched: int = 0  # ledger rows about nobody


def prune(sessions: sessionmaker[Session], now: datetime, days: int) -> PruneReport:
    """Delete what is older than ``days`` (see the module docstring)."""
    cutoff = now - timedelta(days=days)
    report = PruneReport()
    # Settled rows, found through the claim index (status, next_attempt_at, ...): the last
    # attempt of a settled row is when it settled.
    while True:
        with sessions.begin() as session:
            ids = list(
                session.scalars(
                    select(Delivery.id)
                    .where(Delivery.status.in_(SETTLED), Delivery.next_attempt_at < cutoff)
                    .limit(CHUNK)
                )
            )
            if ids:
                session.execute(delete(Delivery).where(Delivery.id.in_(ids)))
        report.deliveries += len(ids)
        if len(ids) < CHUNK:
            break
    with sessions.begin() as session:
        report.digests, report.editions = _orphans(session, cutoff)
    report.clicks = _chunks(sessions, Click.id, Click.clicked_at < cutoff)
    _chunks(sessions, ClickInbox.id, ClickInbox.clicked_at < now - INBOX_DAYS)
    _chunks(sessions, SunsetStep.id, SunsetStep.at < cutoff)
    report.unmatched = _chunks(
        sessions,
        BounceEvent.id,
        BounceEvent.kind == Kind.UNMATCHED,
        BounceEvent.subscriber_id.is_(None),
        BounceEvent.delivery_id.is_(None),
        BounceEvent.created_at < cutoff,
    )
    return report


def _chunks(sessions: sessionmaker[Session], key: Any, *where: Any) -> int:
    """Delete the rows of ``key``'s table matching ``where``, a chunk per transaction."""
    deleted = 0
    while True:
        with sessions.begin() as session:
            ids = list(session.scalars(select(key).where(*where).limit(CHUNK)))
            if ids:
                session.execute(delete(key.class_).where(key.in_(ids)))
        deleted += len(ids)
        if len(ids) < CHUNK:
            return deleted


def _orphans(session: Session, cutoff: datetime) -> tuple[int, int]:
    """Digests and editions of before the window whose queue rows are all gone (looked up
    through the (edition, status) index, never a scan of the history). A digest the archive
    shows stays, and so does its edition; the edition's other digests go."""
    oldest_kept = (cutoff - timedelta(days=1)).date().isoformat()  # periods are local dates
    emptied = session.scalars(
        select(Edition.id).where(
            Edition.period < oldest_kept,
            ~exists().where(Delivery.edition_id == Edition.id),
        )
    ).all()
    digests = editions = 0
    for start in range(0, len(emptied), CHUNK):
        chunk = emptied[start : start + CHUNK]
        digests += _count(
            session.execute(
                delete(Digest).where(
                    Digest.edition_id.in_(chunk),
                    ~exists().where(ArchiveEdition.digest_id == Digest.id),
                )
            )
        )
        editions += _count(
            session.execute(
                delete(Edition).where(
                    Edition.id.in_(chunk), ~exists().where(Digest.edition_id == Edition.id)
                )
            )
        )
    return digests, editions


def _count(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)
