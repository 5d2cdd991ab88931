"""An operator's "send now" (``POST /api/editions/trigger``): the edition each reader's
schedule is on, queued now instead of at its send time.

The safety rules of SPEC §4 hold as for a scheduled edition: one edition per reader per
local date (week), named the way the schedule names it (a weekly by its Sunday, so a
trigger on Wednesday is that week's recap, not a second one), and never an edition for a
local date whose send time has not come: a Paris reader triggered at 23:56 UTC is left
for their 07:00, and the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.mail.digests import DigestRenderer
from digestd.models import EditionKind, Subscriber, SubscriberStatus
from digestd.planning.planner import BATCH, Planner, Timing
from digestd.planning.policy import EnqueueReport, Policy

LATER = "their local send time has not come yet today; their regular edition goes out then"


@dataclass
class TriggerReport:
    kind: EditionKind
    queued: int = 0
    nothing_to_send: int = 0
    already_had_it: int = 0
    left_for_later: int = 0
    failed_to_render: int = 0  # rows written as failed: their digest could not be rendered
    not_eligible: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "queued": self.queued,
            "nothing_to_send": self.nothing_to_send,
            "already_had_it": self.already_had_it,
            "left_for_later": {"count": self.left_for_later, "why": LATER},
            "failed_to_render": self.failed_to_render,
            "not_eligible": self.not_eligible,
        }


def trigger(
    sessions: sessionmaker[Session],
    policy: Policy,
    renderer: DigestRenderer,
    kind: EditionKind,
    emails: list[str] | None,
    now: datetime,
) -> TriggerReport:
    """Queue ``kind`` for these active readers (None: every one who takes it), in batches
    (keyset on id), so "all" of a large list never sits in memory at once."""
    report = TriggerReport(kind)
    planner = Planner(kind, policy, renderer, now, Timing.TRIGGER)
    takes = Subscriber.wants_daily if kind is EditionKind.DAILY else Subscriber.wants_weekly
    found: set[str] = set()
    after = 0
    while True:
        statement = (
            select(Subscriber.id, Subscriber.email, Subscriber.timezone)
            .where(Subscriber.status == SubscriberStatus.ACTIVE, takes.is_(True))
            .where(Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(BATCH)
        )
        if emails is not None:
            statement = statement.where(Subscriber.email.in_(emails))
        planned = EnqueueReport()
        with sessions.begin() as session:
            batch = session.execute(statement).all()
            if not batch:
                break
            planner.plan(session, [(r.id, r.timezone) for r in batch], planned)
        after = batch[-1].id
        found.update(r.email for r in batch)
        _add(report, planned, len(batch))
    if emails is not None:
        with sessions() as session:
            report.not_eligible = why_not(session, kind, [e for e in emails if e not in found])
    return report


def _add(report: TriggerReport, planned: EnqueueReport, readers: int) -> None:
    report.queued += planned.queued[report.kind]
    report.failed_to_render += planned.unrenderable
    report.nothing_to_send += planned.empty + planned.instead
    report.left_for_later += planned.later
    # A row the planner did not insert is one the reader already had for that edition.
    written = planned.queued[report.kind] + planned.unrenderable
    skipped = planned.empty + planned.instead + planned.later
    report.already_had_it += readers - written - skipped


def why_not(session: Session, kind: EditionKind, emails: list[str]) -> list[dict[str, str]]:
    known = {
        s.email: s for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))
    }
    out: list[dict[str, str]] = []
    for email in emails:
        s = known.get(email)
        if s is None:
            reason = "no such subscriber"
        elif s.status != SubscriberStatus.ACTIVE:
            reason = f"status is {s.status}"
        else:
            reason = f"does not take the {kind} edition"
        out.append({"email": email, "reason": reason})
    return out
