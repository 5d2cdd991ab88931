"""The operator's routes of the admin API: subscribers (list, search, CSV export), the
suppression list, stats, and editions (preview, send now). Registered in ``api.ENDPOINTS``,
so the bearer-token guard covers every one.

Lists page with keyset cursors (newest first), never OFFSET: a page costs the same at the
end of a million rows as at the start, and rows added meanwhile do not shift the pages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from digestd.activity import snapshot
from digestd.categories import CATEGORIES, parse_categories
from digestd.editions import BATCH, enqueue_now
from digestd.errors import ValidationError
from digestd.export import export_csv
from digestd.models import (
    Delivery,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
    Suppression,
)
from digestd.preview import preview
from digestd.subscribers import email_hash, frequency_name, normalise_email
from digestd.web import params
from digestd.web.context import Web, web
from digestd.web.errors import WebError

KINDS = [str(k) for k in EditionKind]
STATUSES = [str(s) for s in SubscriberStatus]
MAX_TRIGGER_EMAILS = 1000
# The preview is article text from elsewhere shown on our origin: no script, no forms.
PREVIEW_CSP = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


# --- subscribers -------------------------------------------------------------------------


async def list_subscribers(request: Request) -> Response:
    w = web(request)
    params.only(request, "q", "status", "category", "limit", "cursor")
    query = (params.text(request, "q") or "").strip().lower()
    status = params.choice(request, "status", STATUSES)
    category = params.choice(request, "category", list(CATEGORIES))
    limit = params.limit(request)
    cursors = params.Cursors(w.settings.secret_keys)
    after = cursors.load(request, "subscribers")
    if after is not None and not (len(after) == 1 and isinstance(after[0], int)):
        raise WebError(400, "cursor: not a cursor this list handed out", field="cursor")
    rows, more = await w.db(
        _subscribers_page, w, query, status, category, limit, after[0] if after else None
    )
    next_cursor = cursors.dump("subscribers", [rows[-1][0]]) if more else None
    return JSONResponse(
        {"subscribers": [row for _, row in rows], "next_cursor": next_cursor, "limit": limit}
    )


def _subscribers_page(
    w: Web, query: str, status: str | None, category: str | None, limit: int, before: int | None
) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    statement = select(Subscriber).order_by(Subscriber.id.desc()).limit(limit + 1)
    if query:
        # Addresses are stored lower-cased; autoescape keeps % and _ literal.
        statement = statement.where(Subscriber.email.contains(query, autoescape=True))
    if status:
        statement = statement.where(Subscriber.status == status)
    if category:
        statement = statement.where(
            Subscriber.id.in_(
                select(SubscriberCategory.subscriber_id).where(
                    SubscriberCategory.category == category
                )
            )
        )
    if before is not None:
        statement = statement.where(Subscriber.id < before)
    with w.sessions() as session:
        found = list(session.scalars(statement))
        rows = [(s.id, _subscriber_json(s)) for s in found[:limit]]
    return rows, len(found) > limit


def _subscriber_json(s: Subscriber) -> dict[str, Any]:
    return {
        "public_id": s.public_id,
        "email": s.email,
        "status": s.status,
        "categories": s.category_slugs,
        "frequency": frequency_name(s),
        "timezone": s.timezone,
        "created_at": _iso(s.created_at),
        "confirmed_at": _iso(s.confirmed_at),
    }


async def export_subscribers(request: Request) -> Response:
    """The same CSV as ``digestd subscribers export``, streamed as it is read."""
    w = web(request)
    params.only(request)

    def chunks() -> Iterator[str]:
        # A sync generator: Starlette pulls it in a worker thread, off the event loop.
        with w.sessions() as session:
            yield from export_csv(session)

    name = f"subscribers-{w.clock():%Y%m%d-%H%M%S}.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- suppressions ------------------------------------------------------------------------


async def list_suppressions(request: Request) -> Response:
    w = web(request)
    params.only(request, "email", "limit", "cursor")
    limit = params.limit(request)
    raw_email = params.text(request, "email")
    wanted: str | None = None
    if raw_email:
        try:
            wanted = email_hash(normalise_email(raw_email))
        except ValidationError as exc:
            raise WebError(400, f"email: {exc.problem}", field="email") from exc
    cursors = params.Cursors(w.settings.secret_keys)
    after = cursors.load(request, "suppressions")
    key: tuple[datetime, str] | None = None
    if after is not None:
        try:
            key = (datetime.fromisoformat(after[0]), str(after[1]))
        except (IndexError, TypeError, ValueError) as exc:
            raise WebError(
                400, "cursor: not a cursor this list handed out", field="cursor"
            ) from exc
    rows, more = await w.db(_suppressions_page, w, wanted, limit, key)
    next_cursor = (
        cursors.dump("suppressions", [rows[-1].created_at.isoformat(), rows[-1].email_hash])
        if more
        else None
    )
    return JSONResponse(
        {
            "suppressions": [
                {"email_hash": r.email_hash, "reason": r.reason, "created_at": _iso(r.created_at)}
                for r in rows
            ],
            "next_cursor": next_cursor,
            "limit": limit,
        }
    )


def _suppressions_page(
    w: Web, wanted: str | None, limit: int, before: tuple[datetime, str] | None
) -> tuple[list[Suppression], bool]:
    statement = (
        select(Suppression)
        .order_by(Suppression.created_at.desc(), Suppression.email_hash.desc())
        .limit(limit + 1)
    )
    if wanted is not None:
        statement = statement.where(Suppression.email_hash == wanted)
    if before is not None:
        at, digest = before
        statement = statement.where(
            or_(
                Suppression.created_at < at,
                and_(Suppression.created_at == at, Suppression.email_hash < digest),
            )
        )
    with w.sessions() as session:
        found = list(session.scalars(statement))
    return found[:limit], len(found) > limit


# --- stats and editions --------------------------------------------------------------------


async def stats(request: Request) -> Response:
    w = web(request)
    params.only(request)
    now = w.clock()
    current = await w.db(_snapshot, w)
    return JSONResponse({"as_of": _iso(now), **current})


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
            planned = enqueue_now(w.sessions, w.service.policy, kind, fresh, now)
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
