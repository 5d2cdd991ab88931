"""The admin API's lists: subscribers (search, filters, CSV export) and the suppression
list. Registered in ``api.ENDPOINTS``, so the bearer-token guard covers every one.

Lists page with keyset cursors (newest first), never OFFSET: a page costs the same at the
end of a million rows as at the start, and rows added meanwhile do not shift the pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from digestd.content.categories import CATEGORIES
from digestd.errors import ValidationError
from digestd.models import Subscriber, SubscriberCategory, SubscriberStatus, Suppression
from digestd.ops.activity import utc_iso
from digestd.readers.export import export_csv
from digestd.readers.subscribers import email_hash, frequency_name, normalise_email
from digestd.web import params
from digestd.web.context import Web, web
from digestd.web.errors import WebError

STATUSES = [str(s) for s in SubscriberStatus]


# --- subscribers -------------------------------------------------------------------------


async def list_subscribers(request: Request) -> Response:
    w = web(request)
    params.only(request, "q", "status", "category", "limit", "cursor")
    query = (params.text(request, "q") or "").strip().lower()
    status = params.choice(request, "status", STATUSES)
    category = params.choice(request, "category", list(CATEGORIES))
    limit = params.limit(request)
    cursors = params.Cursors(w.tokens)
    after = cursors.load_id(request, "subscribers")
    rows, more = await w.db(_subscribers_page, w, query, status, category, limit, after)
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
        "created_at": utc_iso(s.created_at),
        "confirmed_at": utc_iso(s.confirmed_at),
    }


async def export_subscribers(request: Request) -> Response:
    params.only(request)
    return subscribers_csv(web(request))


def subscribers_csv(w: Web) -> StreamingResponse:
    """The same CSV as ``digestd subscribers export``, streamed as it is read."""

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
    cursors = params.Cursors(w.tokens)
    key = cursors.load_timed(request, "suppressions")
    rows, more = await w.db(_suppressions_page, w, wanted, limit, key)
    next_cursor = (
        cursors.dump("suppressions", [rows[-1].created_at.isoformat(), rows[-1].email_hash])
        if more
        else None
    )
    return JSONResponse(
        {
            "suppressions": [
                {
                    "email_hash": r.email_hash,
                    "reason": r.reason,
                    "created_at": utc_iso(r.created_at),
                }
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
