"""The public archive: each category's (and All Technology's) editions, published once their
send time has passed.

An archive edition is the digest a reader following only that category (``all``: every
category) gets at the regular send time in ``DIGESTD_DEFAULT_TIMEZONE``, with nothing left
out for having been sent to them before. It is made by the planner's own selection and
layout and created through the same :class:`DigestBook`, so it is the very digest row such a
reader is sent: rendered once, stored, shared.

Each tick looks at the latest slot of each kind. A (category, kind, period) is decided once
and recorded in ``archive_editions`` even when there was nothing to send (with no digest),
so a later tick costs one indexed query per kind. Only the latest slot is looked at: after
a daemon was down for days, the days it missed stay out of the archive, as they stayed out
of the readers' inboxes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.categories import ALL, CATEGORIES
from digestd.db import insert_ignoring_conflicts
from digestd.mail.digests import DigestRenderer
from digestd.models import ArchiveEdition, EditionKind
from digestd.planning.digests import DigestBook
from digestd.planning.planner import Planner, Timing
from digestd.planning.policy import Policy
from digestd.planning.schedule import Slot, latest_slot

log = logging.getLogger(__name__)

SHELVES = (ALL, *CATEGORIES)  # All Technology first, then the site's order


def shelf_categories(shelf: str) -> list[str]:
    """The categories a reader of this shelf follows, in the site's order."""
    return list(CATEGORIES) if shelf == ALL else [shelf]


@dataclass
class ArchiveReport:
    published: int = 0  # archive editions with a digest
    empty: int = 0  # (category, period) with nothing to send
    rendered: int = 0  # digests the archive rendered (the rest were readers' already)


def publish_due(
    sessions: sessionmaker[Session],
    policy: Policy,
    renderer: DigestRenderer,
    zone_name: str,
    now: datetime,
    should_stop: Callable[[], bool] = lambda: False,
) -> ArchiveReport:
    """Publish every archive edition whose send time (in ``zone_name``) has passed by
    ``now`` and that is not published yet. Each shelf commits on its own: a shelf never
    holds one new digest's key while it waits for another's (no deadlock with a planner
    creating the same digests), and stopping loses nothing done."""
    zone = ZoneInfo(zone_name)
    report = ArchiveReport()
    for kind in EditionKind:
        slot = latest_slot(kind, now, zone, policy.send_time(kind))
        with sessions() as session:
            todo = _unpublished(session, kind, slot.period)
        if not todo:
            continue
        # Content as of the send time: the planner's "now" is the slot.
        planner = Planner(kind, policy, renderer, slot.at, Timing.NOW)
        book = DigestBook(kind, renderer, now)
        before = (report.published, report.empty)
        for shelf in todo:
            if should_stop():
                return report
            with sessions.begin() as session:
                _publish(session, planner, book, slot, shelf, now, report)
        report.rendered += book.rendered
        published, empty = report.published - before[0], report.empty - before[1]
        if published or empty:
            log.info(
                "archive: %s %s published for %d of %d (nothing to send for %d); "
                "rendered %d digest%s",
                kind,
                slot.period,
                published,
                len(todo),
                empty,
                book.rendered,
                "" if book.rendered == 1 else "s",
            )
    return report


def _unpublished(session: Session, kind: EditionKind, period: str) -> list[str]:
    done = set(
        session.scalars(
            select(ArchiveEdition.category).where(
                ArchiveEdition.category.in_(SHELVES),  # seeks the (category, kind, period) key
                ArchiveEdition.kind == kind,
                ArchiveEdition.period == period,
            )
        )
    )
    return [shelf for shelf in SHELVES if shelf not in done]


def _publish(
    session: Session,
    planner: Planner,
    book: DigestBook,
    slot: Slot,
    shelf: str,
    now: datetime,
    report: ArchiveReport,
) -> None:
    found = planner.layout_for(session, slot, shelf_categories(shelf), frozenset())
    digest_id: int | None = None
    if found is not None:
        layout, key = found
        edition_id = planner.edition_ids(session, {slot.period})[slot.period]
        book.provide(session, {(edition_id, key): layout}, {edition_id: slot.period})
        digest_id, error = book.get((edition_id, key))
        if error is not None:  # its readers' deliveries failed with it; nothing to show
            log.warning(
                "archive: %s %s %s not published: %s", shelf, planner.kind, slot.period, error
            )
            digest_id = None
    inserted = insert_ignoring_conflicts(
        session,
        ArchiveEdition.__table__,
        [
            {
                "category": shelf,
                "kind": planner.kind,
                "period": slot.period,
                "digest_id": digest_id,
                "published_at": now,
            }
        ],
        ["category", "kind", "period"],
        returning=["id"],
    )
    if inserted:  # another process may have published it meanwhile
        if digest_id is None:
            report.empty += 1
        else:
            report.published += 1
