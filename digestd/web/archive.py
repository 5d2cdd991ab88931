"""The public archive (SPEC §6): ``/archive`` (All Technology and each category with their
latest editions), ``/archive/{category}`` (a shelf's editions, newest first, paged with
``?before=DATE``), ``/archive/{category}/{kind}/{date}`` (one edition; ``latest`` redirects
to the newest) and ``/archive/{category}.atom``.

No answer here carries personal data, so every one is cacheable: an ETag, Last-Modified,
``304 Not Modified``, ``Cache-Control: public`` (see :mod:`digestd.web.caching`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from digestd.content.categories import ALL, CATEGORIES
from digestd.mail.digests import stored_templates
from digestd.mail.template import MessageTemplate
from digestd.models import EditionKind
from digestd.web import atom, shelves
from digestd.web.archive_page import edition_page
from digestd.web.caching import cached
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.shelves import Shelved, is_shelf, shelf_name, subscribe_path
from digestd.web.view import VIEW_CSP

LIST_MAX_AGE = 300  # lists and feeds gain an edition a day; minutes late is fine
EDITION_MAX_AGE = 3600  # an edition never changes; only its "next" link appears later
PAGE = 30
FEED_ENTRIES = 50
LATEST = "latest"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _shelf_of(request: Request) -> str:
    name = request.path_params["category"]
    if not is_shelf(name) and is_shelf(name.lower()):  # /archive/AI: the address meant
        path = request.url.path.replace(f"/archive/{name}", f"/archive/{name.lower()}", 1)
        query = f"?{request.url.query}" if request.url.query else ""
        raise HTTPException(308, headers={"Location": path + query})
    if not is_shelf(name):
        shown = name[:40]
        raise WebError(
            404,
            f"There is no archive called {shown!r}. The archive has 'all' (All Technology) "
            f"and one for each category: {', '.join(CATEGORIES)}.",
        )
    return str(name)


def _date(value: str, field: str) -> str:
    """A date as the archive names editions (YYYY-MM-DD), or a 400 naming the field."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise WebError(
            400, f"{field} must be a date written YYYY-MM-DD, e.g. 2026-11-30.", field=field
        ) from exc


# --- /archive ------------------------------------------------------------------------------


def _index(w: Web) -> list[dict[str, Any]]:
    found = []
    with w.sessions() as session:
        for shelf in (ALL, *CATEGORIES):
            newest = [shelves.latest(session, shelf, kind) for kind in EditionKind]
            editions = sorted((e for e in newest if e), key=lambda e: e.period, reverse=True)
            found.append({"slug": shelf, "name": shelf_name(shelf), "editions": editions})
    return found


async def index(request: Request) -> Response:
    w = web(request)
    listed = await w.db(_index, w)
    shown = [e for shelf in listed for e in shelf["editions"]]
    response = w.pages.render("archive_index.html", {"shelves": listed})
    last_modified = shelves.changed_at(shown)
    return cached(request, response, max_age=LIST_MAX_AGE, last_modified=last_modified)


# --- /archive/{category} -------------------------------------------------------------------


@dataclass(frozen=True)
class _Page:
    editions: list[Shelved]
    tops: dict[int, str]  # digest id -> "Top headline + 9 more"
    older: str | None  # ?before= of the next page
    last_modified: datetime | None


def _shelf_page(w: Web, shelf: str, before: str | None) -> _Page:
    with w.sessions() as session:
        found = shelves.editions(session, shelf, PAGE + 1, before)
        shown, older = found[:PAGE], None
        if len(found) > PAGE:
            # A date's daily and weekly stay on one page: ``before`` is a date.
            shown = [e for e in shown if e.period != found[PAGE].period]
            older = shown[-1].period
        stories = shelves.headlines(session, [e.digest_id for e in shown])
    tops = {}
    for digest_id, headlines in stories.items():
        if headlines:
            more = len(headlines) - 1
            tops[digest_id] = headlines[0].title + (f" + {more} more" if more else "")
    return _Page(shown, tops, older, shelves.changed_at(found, stories))


async def shelf_page(request: Request) -> Response:
    w = web(request)
    shelf = _shelf_of(request)
    before = request.query_params.get("before")
    if before is not None:
        before = _date(before, "before")
    page = await w.db(_shelf_page, w, shelf, before)
    context = {
        "slug": shelf,
        "name": shelf_name(shelf),
        "page": page,
        "before": before,
        "subscribe_url": subscribe_path(shelf, EditionKind.DAILY),
    }
    response = w.pages.render("archive_shelf.html", context)
    return cached(request, response, max_age=LIST_MAX_AGE, last_modified=page.last_modified)


# --- /archive/{category}.atom --------------------------------------------------------------


def _feed(w: Web, shelf: str) -> tuple[bytes, datetime | None]:
    base = w.settings.base_url
    with w.sessions() as session:
        entries = shelves.editions(session, shelf, FEED_ENTRIES)
        stories = shelves.headlines(session, [e.digest_id for e in entries])
        began = None if entries else shelves.began(session, shelf)
    head = atom.FeedHead(
        title=f"{w.settings.site_name} · {shelf_name(shelf)} digests",
        self_url=f"{base}/archive/{shelf}.atom",
        page_url=f"{base}/archive/{shelf}",
        author=w.settings.site_name,
        site_url=base,
        began=began,
    )
    return atom.feed(head, entries, stories, base), shelves.changed_at(entries, stories) or began


async def feed(request: Request) -> Response:
    w = web(request)
    shelf = _shelf_of(request)
    body, last_modified = await w.db(_feed, w, shelf)
    response = Response(body, media_type=atom.MEDIA_TYPE)
    return cached(request, response, max_age=LIST_MAX_AGE, last_modified=last_modified)


# --- /archive/{category}/{kind}/{date} -----------------------------------------------------


@dataclass(frozen=True)
class _Edition:
    shown: Shelved
    template: MessageTemplate
    previous: Shelved | None
    following: Shelved | None


def _edition(w: Web, shelf: str, kind: EditionKind, period: str) -> _Edition | None:
    with w.sessions() as session:
        shown = shelves.edition(session, shelf, kind, period)
        if shown is None:
            return None
        stored = stored_templates(session, [shown.digest_id]).get(shown.digest_id)
        if stored is None or stored.template is None:
            return None
        previous, following = shelves.neighbours(session, shown)
    return _Edition(shown, stored.template, previous, following)


def _latest(w: Web, shelf: str, kind: EditionKind) -> Shelved | None:
    with w.sessions() as session:
        return shelves.latest(session, shelf, kind)


async def edition(request: Request) -> Response:
    w = web(request)
    shelf = _shelf_of(request)
    name = shelf_name(shelf)
    try:
        kind = EditionKind(request.path_params["kind"])
    except ValueError as exc:
        raise WebError(
            404, f"The {name} archive has daily and weekly editions only.", field="kind"
        ) from exc
    if request.path_params["date"] == LATEST:
        newest = await w.db(_latest, w, shelf, kind)
        if newest is None:
            raise WebError(404, f"The {name} archive has no {kind} edition yet.")
        redirect = RedirectResponse(newest.path, status_code=302)
        redirect.headers["Cache-Control"] = f"public, max-age={LIST_MAX_AGE}"
        return redirect
    period = _date(request.path_params["date"], "date")
    found = await w.db(_edition, w, shelf, kind, period)
    if found is None:
        raise WebError(
            404,
            f"The {name} archive has no {kind} edition of {period}. "
            f"Its editions are listed at /archive/{shelf}.",
        )
    page = edition_page(w, found.template, found.shown, found.previous, found.following)
    response = HTMLResponse(page)
    response.headers["Content-Security-Policy"] = VIEW_CSP
    # The page changes once more: when the next edition appears, with its link.
    changed = shelves.changed_at(e for e in (found.shown, found.following) if e is not None)
    return cached(request, response, max_age=EDITION_MAX_AGE, last_modified=changed)


# The feed's route comes first: "/archive/{category}" would take "ai.atom" as a category.
ROUTES = [
    Route("/archive", index, methods=["GET"]),
    Route("/archive/{category}.atom", feed, methods=["GET"]),
    Route("/archive/{category}", shelf_page, methods=["GET"]),
    Route("/archive/{category}/{kind}/{date}", edition, methods=["GET"]),
]
