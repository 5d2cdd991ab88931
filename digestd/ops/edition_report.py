"""Editions for the admin pages: the list (newest first, a keyset page at a time, with
each one's queue rows by status) and one edition's report: planned, sent, failed and
skipped by reason, bounced (from the ledger: hard, soft, complaints; its other reports
apart), unsubscribed since, and its digests.

Everything is read through one edition's rows (the (edition, status) index, the
bounces' delivery index): the cost is the edition's size, never the history's.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digestd.mail.layout import Layout
from digestd.models import (
    ArchiveEdition,
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Digest,
    Edition,
    Subscriber,
    SubscriberStatus,
)
from digestd.readers.bounce_policy import BOUNCES
from digestd.readers.ledger import redact

REASONS = 8  # reasons listed for failed and skipped rows; the rest are summed
DIGESTS = 50  # digests listed, the most read first
_TIMES = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\dZ")
_DOMAINS = re.compile(r"…@[^\s<>\"():;,\[\]]+")  # what ledger.redact left of an address


@dataclass(frozen=True)
class EditionRow:
    id: int
    kind: str
    period: str
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)  # status -> rows

    @property
    def planned(self) -> int:
        return sum(self.counts.values())

    @property
    def waiting(self) -> int:
        return self.get(DeliveryStatus.QUEUED) + self.get(DeliveryStatus.SENDING)

    def get(self, status: str) -> int:
        return self.counts.get(status, 0)


def editions(session: Session, limit: int, before: int | None) -> list[EditionRow]:
    """Up to ``limit`` editions below id ``before``, newest first, with their counts."""
    statement = select(Edition).order_by(Edition.id.desc()).limit(limit)
    if before is not None:
        statement = statement.where(Edition.id < before)
    found = list(session.scalars(statement))
    counts: dict[int, dict[str, int]] = {e.id: {} for e in found}
    if found:
        rows = session.execute(
            select(Delivery.edition_id, Delivery.status, func.count())
            .where(Delivery.edition_id.in_(list(counts)))
            .group_by(Delivery.edition_id, Delivery.status)
        )
        for edition_id, status, n in rows:
            counts[edition_id][str(status)] = int(n)
    return [EditionRow(e.id, e.kind, e.period, e.created_at, counts[e.id]) for e in found]


@dataclass(frozen=True)
class DigestRow:
    id: int
    readers: int
    articles: int
    render_error: str | None
    archived: tuple[str, ...] = ()  # the public archive's shelves showing it ("all", "ai")


@dataclass(frozen=True)
class EditionReport:
    edition: EditionRow
    failed_by_reason: list[tuple[str, int]]
    skipped_by_reason: list[tuple[str, int]]
    reported: dict[str, int]  # ledger kind (hard, soft, failed-not-address, ...) -> rows
    unsubscribed_since: int  # readers sent it who unsubscribed after it reached them
    digests: list[DigestRow]
    digest_count: int

    @property
    def bounced(self) -> dict[str, int]:
        """The bounces and complaints by kind (:data:`BOUNCES`)."""
        return {kind: n for kind, n in self.reported.items() if kind in BOUNCES}

    @property
    def bounces(self) -> int:
        return sum(self.bounced.values())

    @property
    def other_reports(self) -> dict[str, int]:
        """The ledger's rows that are no bounce: refusals not about the address, notices."""
        return {kind: n for kind, n in self.reported.items() if kind not in BOUNCES}


def report(session: Session, edition_id: int) -> EditionReport | None:
    found = editions(session, 1, edition_id + 1)
    if not found or found[0].id != edition_id:
        return None
    return EditionReport(
        found[0],
        _reasons(session, edition_id, DeliveryStatus.FAILED),
        _reasons(session, edition_id, DeliveryStatus.SKIPPED),
        _bounced(session, edition_id),
        _unsubscribed_since(session, edition_id),
        *_digests(session, edition_id),
    )


def reason(text: str | None) -> str:
    """A row's why, as a group of rows: no addresses, no instants of its own. The domain
    goes too: a relay quoting each recipient (``550 5.1.1 <ann@example.com>: user
    unknown``) would otherwise make one group per domain, and the top reasons a list of
    providers."""
    shown = _TIMES.sub("…", _DOMAINS.sub("…", redact(text or "") or "")).strip()
    return shown[:200] or "no reason recorded"


def _reasons(session: Session, edition_id: int, status: str) -> list[tuple[str, int]]:
    rows = session.execute(
        select(Delivery.last_error, func.count())
        .where(Delivery.edition_id == edition_id, Delivery.status == status)
        .group_by(Delivery.last_error)
    )
    grouped: Counter[str] = Counter()
    for why, n in rows:
        grouped[reason(why)] += int(n)
    ranked = grouped.most_common()
    if len(ranked) > REASONS:
        rest = sum(n for _, n in ranked[REASONS - 1 :])
        ranked = [*ranked[: REASONS - 1], ("other reasons", rest)]
    return ranked


def _bounced(session: Session, edition_id: int) -> dict[str, int]:
    rows = session.execute(
        select(BounceEvent.kind, func.count())
        .join(Delivery, Delivery.id == BounceEvent.delivery_id)
        .where(Delivery.edition_id == edition_id)
        .group_by(BounceEvent.kind)
    )
    return {str(kind): int(n) for kind, n in rows}


def _unsubscribed_since(session: Session, edition_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(
                Delivery.edition_id == edition_id,
                Delivery.status == DeliveryStatus.SENT,
                Subscriber.status == SubscriberStatus.UNSUBSCRIBED,
                Subscriber.unsubscribed_at >= Delivery.sent_at,
            )
        )
        or 0
    )


def _digests(session: Session, edition_id: int) -> tuple[list[DigestRow], int]:
    """The digests with most readers first, then those nobody was sent (an archive's
    copy); at most DIGESTS, and how many the edition has."""
    readers: dict[int, int] = {
        digest_id: int(n)
        for digest_id, n in session.execute(
            select(Delivery.digest_id, func.count())
            .where(Delivery.edition_id == edition_id, Delivery.digest_id.is_not(None))
            .group_by(Delivery.digest_id)
        )
        if digest_id is not None
    }
    total = int(session.scalar(select(func.count()).where(Digest.edition_id == edition_id)) or 0)
    shown = sorted(readers, key=lambda d: (-readers[d], d))[:DIGESTS]
    if len(shown) < min(total, DIGESTS):
        shown += session.scalars(
            select(Digest.id)
            .where(Digest.edition_id == edition_id, Digest.id.not_in(shown))
            .order_by(Digest.id)
            .limit(DIGESTS - len(shown))
        ).all()
    shelves = _shelves(session, shown)
    rows = session.execute(
        select(Digest.id, Digest.layout, Digest.render_error).where(Digest.id.in_(shown))
    ).all()
    by_id = {
        digest_id: DigestRow(
            digest_id,
            readers.get(digest_id, 0),
            len(Layout.from_json(layout).article_ids()),
            error,
            tuple(shelves.get(digest_id, ())),
        )
        for digest_id, layout, error in rows
    }
    return [by_id[d] for d in shown if d in by_id], total


def _shelves(session: Session, digest_ids: list[int]) -> dict[int, list[str]]:
    """The public archive's shelves showing each of these digests."""
    found: dict[int, list[str]] = {}
    for digest_id, category in session.execute(
        select(ArchiveEdition.digest_id, ArchiveEdition.category)
        .where(ArchiveEdition.digest_id.in_(digest_ids))
        .order_by(ArchiveEdition.category)
    ):
        if digest_id is not None:
            found.setdefault(digest_id, []).append(category)
    return found
