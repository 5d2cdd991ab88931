"""How many signup emails one inbox, and everyone together, may receive (SPEC §6: no
"subscription bombing").

A signup form can be made to mail anyone, so every email it triggers (a confirmation,
"you're already subscribed", a fresh link) is claimed here first, against two limits kept
in the database so that every process shares them:

- per *canonical mailbox*: ``victim+1@example.com`` and ``victim+2@example.com`` reach one
  inbox, as do Gmail's dotted spellings and googlemail.com, so they share one count;
- in total per hour, so a flood of distinct addresses cannot make digestd a spam cannon
  (and burn the sending domain's reputation).

A claim is a guarded UPDATE of one row (or the INSERT of the first one): only the request
that moved the counter sends, however many race.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, case, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from digestd.models import MailThrottle

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
EVERYONE = "*"  # the key of the global count (a mailbox key is 64 hex digits)


def canonical_mailbox(email: str) -> str:
    """The inbox an address reaches: ``+tag`` dropped (sub-addressing, RFC 5233, which
    most providers honour), and for Gmail the dots too, googlemail.com being gmail.com."""
    local, _, domain = email.lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def mailbox_key(email: str) -> str:
    """What the throttle table keeps: a hash, not the address. Erasure leaves the row (it
    still guards that inbox from a stranger's signups) until its window ends; it tells
    no more than the erasure's own suppression hash."""
    return hashlib.sha256(canonical_mailbox(email).encode()).hexdigest()


@dataclass(frozen=True)
class Limit:
    count: int  # emails per window
    window: timedelta
    interval: timedelta = timedelta(0)  # at least this long between two emails


def claim(session: Session, key: str, limit: Limit, now: datetime) -> bool:
    """Count one email for ``key`` and say whether it may be sent."""
    if _take(session, key, limit, now):
        return True
    if limit.count < 1:
        return False
    # No row yet (first email to this inbox), or the limit is reached: only an INSERT that
    # takes tells which. Of two racing first requests one insert takes; the other finds
    # the row there now (PostgreSQL waited for it) and its count decides.
    return _insert_first(session, key, now) or _take(session, key, limit, now)


def _take(session: Session, key: str, limit: Limit, now: datetime) -> bool:
    """The guarded UPDATE of ``key``'s row: True when it had room and counted this one."""
    window_over = MailThrottle.window_started_at <= now - limit.window
    room = [MailThrottle.key == key, or_(window_over, MailThrottle.sent < limit.count)]
    if limit.interval:
        # Only where there is an interval to keep: requests racing in from several threads
        # or processes claim in any order, and one stamped a moment after this one's `now`
        # must not make this one look too soon.
        room.append(
            or_(
                MailThrottle.last_sent_at.is_(None),
                MailThrottle.last_sent_at <= now - limit.interval,
            )
        )
    claimed = session.execute(
        update(MailThrottle)
        .where(*room)
        .values(
            sent=case((window_over, 1), else_=MailThrottle.sent + 1),
            window_started_at=case((window_over, now), else_=MailThrottle.window_started_at),
            last_sent_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], claimed).rowcount == 1


def _insert_first(session: Session, key: str, now: datetime) -> bool:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(MailThrottle)
        .values(key=key, window_started_at=now, sent=1, last_sent_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(MailThrottle.key)
    )
    return session.scalar(statement) is not None


def release(session: Session, key: str, sent_at: datetime) -> None:
    """The email was not sent after all: take the claim back (if nothing claimed since)."""
    session.execute(
        update(MailThrottle)
        .where(
            MailThrottle.key == key,
            MailThrottle.last_sent_at == sent_at,
            MailThrottle.sent > 0,
        )
        .values(sent=MailThrottle.sent - 1, last_sent_at=None)
        .execution_options(synchronize_session=False)
    )


def forget_old(session: Session, now: datetime, window: timedelta) -> None:
    """Drop mailbox rows with nothing in the last ``window``: they no longer limit anyone."""
    cutoff = now - window
    session.execute(
        delete(MailThrottle)
        .where(
            MailThrottle.key != EVERYONE,
            MailThrottle.window_started_at < cutoff,
            or_(MailThrottle.last_sent_at.is_(None), MailThrottle.last_sent_at < cutoff),
        )
        .execution_options(synchronize_session=False)
    )
