"""What the digests sold, for operators: ``/admin/engagement`` (the editions with sent,
failed, bounced, unsubscribed, clicks, unique clickers and click-through rate; the week's
top stories) and ``/admin/engagement/{id}`` (one edition's stories). Behind the admin
sign-in (:mod:`digestd.web.admin`); figures from :mod:`digestd.ops.engagement`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from digestd.ops import engagement
from digestd.ops.engagement import EditionStats, StoryStats, rate
from digestd.web.admin import AdminSessions, enabled
from digestd.web.context import Web, web
from digestd.web.errors import WebError

EDITIONS = 30
TOP = 10


def percent(unique: int, sent: int) -> str:
    share = rate(unique, sent)
    return "–" if share is None else f"{share * 100:.1f} %"


def _edition_row(e: EditionStats) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": f"{e.kind.capitalize()} {e.period}",
        "numbers": [
            f"{n:,}"
            for n in (e.sent, e.failed, e.bounced, e.unsubscribed, e.tally.clicks, e.tally.unique)
        ],
        "rate": percent(e.tally.unique, e.sent),
        "scanner": f"{e.tally.scanner:,}",
    }


def _story_row(s: StoryStats) -> dict[str, Any]:
    return {
        "title": s.title,
        "url": s.url,
        "meta": " · ".join(p for p in (s.category, s.source) if p),
        "numbers": [f"{n:,}" for n in (s.sent, s.tally.clicks, s.tally.unique)],
        "rate": percent(s.tally.unique, s.sent),
    }


def _overview(w: Web, now: datetime) -> tuple[list[EditionStats], list[StoryStats]]:
    with w.sessions() as session:
        recent = engagement.recent_editions(session, EDITIONS)
        return recent, engagement.top_stories(session, now, 7, TOP)


async def overview(request: Request) -> Response:
    w = web(request)
    enabled(w)
    if not AdminSessions(w.settings, w.tokens).valid(request):
        return RedirectResponse("/admin", status_code=303)
    now = w.clock()
    editions, top = await w.db(_overview, w, now)
    context = {
        "title": "Engagement",
        "now": now,
        "tracking": w.settings.track_clicks,
        "editions": [_edition_row(e) for e in editions],
        "top": [_story_row(s) for s in top],
    }
    return w.pages.render("admin_engagement.html", context)


def _edition(w: Web, edition_id: int) -> EditionStats | None:
    with w.sessions() as session:
        return engagement.edition(session, edition_id)


async def one_edition(request: Request) -> Response:
    w = web(request)
    enabled(w)
    if not AdminSessions(w.settings, w.tokens).valid(request):
        return RedirectResponse("/admin", status_code=303)
    raw = str(request.path_params["id"])
    found = await w.db(_edition, w, int(raw)) if raw.isdigit() and len(raw) < 18 else None
    if found is None:
        raise WebError(404, f"There is no edition {raw[:20]}.")
    context = {
        "title": f"{found.kind.capitalize()} {found.period}",
        "now": w.clock(),
        "tracking": w.settings.track_clicks,
        "edition": _edition_row(found),
        "stories": [_story_row(s) for s in found.stories],
    }
    return w.pages.render("admin_engagement_edition.html", context)


ROUTES = [
    Route("/admin/engagement", overview, methods=["GET"]),
    Route("/admin/engagement/{id}", one_edition, methods=["GET"]),
]
