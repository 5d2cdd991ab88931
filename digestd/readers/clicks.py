"""Tracked clicks (SPEC §11): where a ``/c/`` link goes, the route's one insert, and
settling what came in.

A click answers at once: one indexed lookup (the delivery, its digest's numbered link,
the article's URL) and one insert into ``click_inbox``. The next tick *settles* the inbox
(:func:`settle`): once an email's clicks have been quiet for :data:`QUIET`, a repeat of a
link within :data:`REPEAT` is dropped (:func:`without_repeats`), a burst of them can be told
from a person (:func:`scanner_burst`), the reader is counted once per article
and once per edition (``click_marks``), and each click becomes a ``clicks`` row, naming
the reader only with ``DIGESTD_TRACK_CLICKS=reader`` and a reader who lets their clicks
teach their digest. The raw inbox row (which names the email) is gone within a minute or
two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from digestd.bulk import among
from digestd.db import insert_ignoring_conflicts, insert_rows
from digestd.models import Article, Click, ClickInbox, ClickMark, Delivery, DigestLink, Subscriber

# A link scanner (Microsoft Defender's Safe Links, Mimecast, Proofpoint) opens every link
# of a message within a second or two; a person does not open three stories in five.
BURST_LINKS = 3
BURST_SECONDS = 5.0
# The same link of the same email again within a minute of its last counted click is one
# click: a double click, a reload, a preview and then the open, or a script replaying it.
REPEAT = timedelta(minutes=1)
QUIET = timedelta(seconds=10)  # an email's clicks wait this long for the rest of a burst
HOLD_AT_MOST = timedelta(minutes=10)  # ... but no longer, however it keeps clicking
BATCH = 5000
ANY_LINK = 0  # the position of the mark "this email had a click counted"


@dataclass(frozen=True)
class Target:
    """Where a tracked link goes: the article's stored URL, or None when it is gone."""

    url: str | None


def targets(session: Session, links: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Target]:
    """The article behind each (delivery id, link number) known: a delivery pruned by
    retention, or a number its digest does not have, is left out."""
    wanted = set(links)
    # By the deliveries' key, then each one's few links (a row-value IN over the join would
    # have SQLite scan every delivery).
    rows = session.execute(
        select(Delivery.id, DigestLink.position, Article.url)
        .join(DigestLink, DigestLink.digest_id == Delivery.digest_id)
        .outerjoin(Article, Article.id == DigestLink.article_id)
        .where(
            among(session, Delivery.id, {d for d, _ in wanted}),
            among(session, DigestLink.position, {p for _, p in wanted}),
        )
    )
    return {
        (delivery_id, position): Target(url)
        for delivery_id, position, url in rows
        if (delivery_id, position) in wanted
    }


def receive(session: Session, clicks: Sequence[tuple[int, int, datetime]]) -> None:
    """Clicks as they come (delivery id, link number, time): settled later (:func:`settle`)."""
    session.execute(
        insert(ClickInbox),
        [{"delivery_id": d, "position": p, "clicked_at": at} for d, p, at in clicks],
    )


def scanner_burst(clicks: Sequence[tuple[datetime, int]]) -> list[bool]:
    """For one email's clicks (time, link number) in time order: which are part of a burst
    of :data:`BURST_LINKS` or more different links within :data:`BURST_SECONDS`."""
    flags = [False] * len(clicks)
    start = 0
    for end, (moment, _) in enumerate(clicks):
        while (moment - clicks[start][0]).total_seconds() > BURST_SECONDS:
            start += 1
        if len({position for _, position in clicks[start : end + 1]}) >= BURST_LINKS:
            flags[start : end + 1] = [True] * (end + 1 - start)
    return flags


def without_repeats(clicks: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """One email's clicks (time, link number) in time order, less those on a link within
    :data:`REPEAT` of that link's last click kept."""
    kept: list[tuple[datetime, int]] = []
    last: dict[int, datetime] = {}
    for moment, position in clicks:
        before = last.get(position)
        if before is None or moment - before >= REPEAT:
            kept.append((moment, position))
            last[position] = moment
    return kept


@dataclass
class Settled:
    """What a settling pass did."""

    clicks: int = 0  # counted as interest
    scanner: int = 0  # part of a scanner's burst (redirected, not counted)
    dropped: int = 0  # the email or its link no longer known
    repeats: int = 0  # the same link of the same email within REPEAT (redirected, one click)


def settle(
    sessions: sessionmaker[Session],
    now: datetime,
    per_reader: bool,
    on_readers: Callable[[Session, dict[int, datetime]], None] | None = None,
) -> Settled:
    """Settle every email's clicks that have been quiet for :data:`QUIET`. ``per_reader``:
    ``DIGESTD_TRACK_CLICKS=reader``; ``on_readers`` then hears, in the same transaction,
    each reader's latest click that looked like a person's (the sunset's restore)."""
    report = Settled()
    while True:
        with sessions() as session:
            waiting = session.execute(
                select(ClickInbox.id, ClickInbox.delivery_id, ClickInbox.clicked_at)
                .order_by(ClickInbox.id)
                .limit(BATCH)
            ).all()
        ready = _ready(waiting, now)
        if not ready:
            return report
        with sessions.begin() as session:
            # Claimed by deleting: two settling processes never count a click twice.
            claimed = session.execute(
                delete(ClickInbox)
                .where(among(session, ClickInbox.id, ready))
                .returning(ClickInbox.delivery_id, ClickInbox.position, ClickInbox.clicked_at)
            ).all()
            rows = [(int(d), int(p), moment) for d, p, moment in claimed]
            latest = _settle_rows(session, rows, per_reader, report)
            if latest:
                _note_last_clicks(session, latest)
                if on_readers is not None:
                    on_readers(session, latest)
        if len(waiting) < BATCH:
            return report


def _ready(waiting: Sequence[Any], now: datetime) -> list[int]:
    """Inbox rows of emails quiet for :data:`QUIET` (or waiting :data:`HOLD_AT_MOST`)."""
    by_email: dict[int, list[Any]] = defaultdict(list)
    for row in waiting:
        by_email[row.delivery_id].append(row)
    ready: list[int] = []
    for rows in by_email.values():
        last, first = max(r.clicked_at for r in rows), min(r.clicked_at for r in rows)
        if now - last >= QUIET or now - first >= HOLD_AT_MOST:
            ready += [r.id for r in rows]
    return ready


def _settle_rows(
    session: Session,
    claimed: list[tuple[int, int, datetime]],
    per_reader: bool,
    report: Settled,
) -> dict[int, datetime]:
    """Turn claimed inbox rows into ``clicks`` rows; each reader's last click (reader mode)."""
    emails = {
        row.id: row
        for row in session.execute(
            select(
                Delivery.id, Delivery.subscriber_id, Delivery.edition_id, Delivery.digest_id
            ).where(among(session, Delivery.id, {d for d, _, _ in claimed}))
        )
    }
    links = {
        (row.digest_id, row.position): row
        for row in session.execute(
            select(DigestLink).where(
                among(session, DigestLink.digest_id, {e.digest_id for e in emails.values()})
            )
        ).scalars()
    }
    learners = _learners(session, {e.subscriber_id for e in emails.values()}) if per_reader else {}
    grouped: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for delivery_id, position, moment in claimed:
        email = emails.get(delivery_id)
        if email is None or (email.digest_id, position) not in links:
            report.dropped += 1
            continue
        grouped[delivery_id].append((moment, position))
    for delivery_id, clicks in grouped.items():
        kept = grouped[delivery_id] = without_repeats(sorted(clicks))
        report.repeats += len(clicks) - len(kept)
    judged = {d: scanner_burst(clicks) for d, clicks in grouped.items()}
    new = _mark(session, grouped, judged)
    rows: list[dict[str, Any]] = []
    latest: dict[int, datetime] = {}
    for delivery_id, clicks in grouped.items():
        email = emails[delivery_id]
        reader = email.subscriber_id
        named = reader if learners.get(reader, False) else None
        for (moment, position), scanner in zip(clicks, judged[delivery_id], strict=True):
            row = {
                "edition_id": email.edition_id,
                "subscriber_id": named,
                "clicked_at": moment,
                "scanner": scanner,
                "first_of_article": not scanner and _take(new, (delivery_id, position)),
                "first_of_edition": not scanner and _take(new, (delivery_id, ANY_LINK)),
            }
            rows.append(_story(row, position, links[(email.digest_id, position)]))
            report.scanner += scanner
            report.clicks += not scanner
            if per_reader and not scanner:
                latest[reader] = max(moment, latest.get(reader, moment))
    insert_rows(session, Click.__table__, rows)
    return latest


def _story(row: dict[str, Any], position: int, link: DigestLink) -> dict[str, Any]:
    """A ``clicks`` row: ``row`` and the story the link numbered ``position`` showed."""
    return {
        **row,
        "article_id": link.article_id,
        "position": position,
        "category": link.category,
        "source": link.source,
    }


def _note_last_clicks(session: Session, latest: dict[int, datetime]) -> None:
    table = cast(Table, Subscriber.__table__)
    session.execute(
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            or_(table.c.last_click_at.is_(None), table.c.last_click_at < bindparam("b_at")),
        )
        .values(last_click_at=bindparam("b_at")),
        [{"b_id": reader, "b_at": moment} for reader, moment in latest.items()],
    )


def learn_from_clicks(session: Session, subscriber: Subscriber, learns: bool) -> None:
    """The reader's own switch. Off: the clicks already recorded stop naming them (they
    stay counted for their editions) and the next ones are recorded without them."""
    subscriber.learns = learns
    if not learns:
        session.execute(
            update(Click)
            .where(Click.subscriber_id == subscriber.id)
            .values(subscriber_id=None)
            .execution_options(synchronize_session=False)
        )


def _learners(session: Session, ids: set[int]) -> dict[int, bool]:
    """Whether each reader lets their clicks teach their digest (their own switch)."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.learns).where(among(session, Subscriber.id, ids))
    )
    return {subscriber_id: bool(learns) for subscriber_id, learns in rows}


def _mark(
    session: Session,
    grouped: dict[int, list[tuple[datetime, int]]],
    judged: dict[int, list[bool]],
) -> set[tuple[int, int]]:
    """Mark the links (and the email) each reader clicked: the marks this call made are
    the clicks that count them as a unique clicker."""
    wanted = {
        (delivery_id, key)
        for delivery_id, clicks in grouped.items()
        for (_, position), scanner in zip(sorted(clicks), judged[delivery_id], strict=True)
        if not scanner
        for key in (position, ANY_LINK)
    }
    made = insert_ignoring_conflicts(
        session,
        ClickMark.__table__,
        [{"delivery_id": d, "position": p} for d, p in sorted(wanted)],
        ["delivery_id", "position"],
        returning=["delivery_id", "position"],
    )
    return {(row.delivery_id, row.position) for row in made}


def _take(new: set[tuple[int, int]], key: tuple[int, int]) -> bool:
    """True the first time a new mark is asked for (its click is the unique one)."""
    if key in new:
        new.discard(key)
        return True
    return False
