"""The admin API's view of the sending side: stats, edition preview and "send now".
Registered in ``api.ENDPOINTS``, so the bearer-token guard covers every one."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd.content.categories import parse_categories
from digestd.errors import ValidationError
from digestd.models import Delivery, Edition, EditionKind, Subscriber, SubscriberStatus
from digestd.ops.activity import snapshot, utc_iso
from digestd.ops.preview import preview
from digestd.planning.planner import BATCH, enqueue_now
from digestd.readers.subscribers import normalise_email
from digestd.web import params
from digestd.web.context import Web, web
from digestd.web.errors import WebError

KINDS = [str(k) for k in EditionKind]
MAX_TRIGGER_EMAILS = 1000
# The preview is article text from elsewhere shown on our origin: no script, no forms.
PREVIEW_CSP = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'"


async def stats(request: Request) -> Response:
    w = web(request)
    params.only(request)
    now = w.clock()
    current = await w.db(_snapshot, w)
    return JSONResponse({"as_of": utc_iso(now), **current})


def _snapshot(w: Web) -> dict[str, Any]:
    with w.sessions() as session:
        return snapshot(session).as_json()


async def preview_edition(request: Request) -> Response:
    w = web(request)
    params.only(request, "kind", "categories", "now", "format")
    kind = params.choice(request, "kind", KINDS)
    if kind is None:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    raw = params.text(request, "categories", 2000)
    try:
        categories = parse_categories(raw or "")
    except ValidationError as exc:
        raise WebError(400, f"categories: {exc.problem}", field="categories") from exc
    now = params.instant(request, "now") or w.clock()
    fmt = params.choice(request, "format", ["html", "text"], default="html") or "html"
    data = await w.db(preview, w.service, EditionKind(kind), categories, now, fmt)
    if data is None:
        raise WebError(
            404, "Nothing to send: no articles in those categories in the edition's window."
        )
    if fmt == "text":
        return Response(data, media_type="text/plain; charset=utf-8")
    return Response(
        data,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": PREVIEW_CSP},
    )


@dataclass
class TriggerReport:
    kind: EditionKind
    queued: int = 0
    nothing_to_send: int = 0
    already_had_it: int = 0
    not_eligible: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "queued": self.queued,
            "nothing_to_send": self.nothing_to_send,
            "already_had_it": self.already_had_it,
            "not_eligible": self.not_eligible,
        }


async def trigger_edition(request: Request) -> Response:
    """Queue an edition now for some or all active readers of that kind; the daemon's next
    tick sends it. Still one per reader per local date (week): a second trigger queues
    nothing for readers who already have it."""
    w = web(request)
    body = await params.json_body(request)
    if not isinstance(body, dict):
        raise WebError(400, "The body must be a JSON object.")
    kind = body.get("kind")
    if kind not in KINDS:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    emails = _trigger_emails(body)
    report = await w.db(_trigger, w, EditionKind(kind), emails, w.clock())
    request.state.audit = {"kind": kind, "queued": report.queued}
    return JSONResponse(report.as_json())


def _trigger_emails(body: dict[str, Any]) -> list[str] | None:
    """The normalised addresses asked for, or None for every active reader."""
    has_emails, everyone = "emails" in body, body.get("all")
    if everyone not in (None, True, False):
        raise WebError(400, "all: must be true or false", field="all")
    if has_emails == bool(everyone):
        raise WebError(400, 'Send either "emails": [...] or "all": true.', field="emails")
    if everyone:
        return None
    raw = body["emails"]
    if not isinstance(raw, list) or not raw:
        raise WebError(400, "emails: must be a non-empty list of addresses", field="emails")
    if len(raw) > MAX_TRIGGER_EMAILS:
        raise WebError(
            400, f'emails: at most {MAX_TRIGGER_EMAILS}; use "all": true', field="emails"
        )
    emails: list[str] = []
    for position, item in enumerate(raw):
        try:
            emails.append(normalise_email(item))
        except ValidationError as exc:
            raise WebError(400, f"emails[{position}]: {exc.problem}", field="emails") from exc
    return list(dict.fromkeys(emails))


def _trigger(w: Web, kind: EditionKind, emails: list[str] | None, now: datetime) -> TriggerReport:
    """In batches of eligible readers (keyset on id), so "all" of a large list never sits
    in memory at once."""
    report = TriggerReport(kind)
    takes = Subscriber.wants_daily if kind is EditionKind.DAILY else Subscriber.wants_weekly
    eligible_emails: set[str] = set()
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
        with w.sessions() as session:
            batch = session.execute(statement).all()
            if not batch:
                break
            fresh = _without_this_edition(session, kind, [(r.id, r.timezone) for r in batch], now)
        after = batch[-1].id
        if emails is not None:
            eligible_emails.update(r.email for r in batch)
        report.already_had_it += len(batch) - len(fresh)
        if fresh:
            # A concurrent tick may queue some of these in between; the deliveries' unique
            # key still keeps it to one each, only these counts could then be slightly high.
            planned = enqueue_now(
                w.sessions, w.service.policy, w.service.renderer, kind, fresh, now
            )
            report.queued += planned.queued[kind]
            report.nothing_to_send += planned.empty
    if emails is not None:
        with w.sessions() as session:
            missing = [e for e in emails if e not in eligible_emails]
            report.not_eligible = _why_not(session, kind, missing)
    return report


def _why_not(session: Session, kind: EditionKind, emails: list[str]) -> list[dict[str, str]]:
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


def _without_this_edition(
    session: Session, kind: EditionKind, subscribers: list[tuple[int, str]], now: datetime
) -> list[int]:
    """Those who have no delivery yet of the edition ``enqueue_now`` would give them: the
    one named by their local date as of ``now``."""
    by_period: dict[str, list[int]] = defaultdict(list)
    for subscriber_id, zone in subscribers:
        by_period[now.astimezone(ZoneInfo(zone)).date().isoformat()].append(subscriber_id)
    fresh: list[int] = []
    for period, ids in by_period.items():
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            have = set(
                session.scalars(
                    select(Delivery.subscriber_id)
                    .join(Edition, Edition.id == Delivery.edition_id)
                    .where(
                        Edition.kind == kind,
                        Edition.period == period,
                        Delivery.subscriber_id.in_(chunk),
                    )
                )
            )
            fresh.extend(i for i in chunk if i not in have)
    return fresh
