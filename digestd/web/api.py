"""The admin JSON API under ``/api``: every route is behind one bearer-token guard.

Adding a route is one line in :data:`ENDPOINTS`; the guard, the ``/api`` prefix and JSON
errors come with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from digestd.content.articles import IngestReport, ingest
from digestd.content.documents import decode_body
from digestd.errors import InputError
from digestd.web import (
    api_articles,
    api_bounces,
    api_editions,
    api_engagement,
    api_lists,
    openapi,
)
from digestd.web.admin_auth import audit, bearer_matches, locked_out, wrong_token
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.params import json_text

Endpoint = Callable[[Request], Awaitable[Response]]


def admin(endpoint: Endpoint, action: str | None = None) -> Endpoint:
    """``Authorization: Bearer $DIGESTD_ADMIN_TOKEN``, compared in constant time, wrong
    tokens throttled per client (:mod:`digestd.web.admin_auth`); an ``action`` is logged."""

    async def guarded(request: Request) -> Response:
        expected = web(request).settings.admin_token
        if not expected:
            raise WebError(403, "The admin API is disabled: set DIGESTD_ADMIN_TOKEN to enable it.")
        if wait := locked_out(request):
            raise WebError(
                429, "Too many wrong admin tokens from here. Wait a few minutes.", retry_after=wait
            )
        if not bearer_matches(request, expected):
            # A guess; no header at all (an uptime check) guesses nothing.
            if request.headers.get("authorization"):
                wrong_token(request, action or "api")
            return JSONResponse(
                {"error": "Missing or wrong admin token: send Authorization: Bearer TOKEN."},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="digestd"'},
            )
        if action is None:
            return await endpoint(request)
        try:
            response = await endpoint(request)
        except WebError as exc:
            audit(request, action, "refused", status=exc.status)
            raise
        outcome = "ok" if response.status_code < 400 else "refused"
        audit(request, action, outcome, status=response.status_code, **_details(request))
        return response

    return guarded


def _details(request: Request) -> dict[str, object]:
    """What an endpoint put in ``request.state.audit`` for its log line (counts, kinds)."""
    details = getattr(request.state, "audit", None)
    return dict(details) if isinstance(details, dict) else {}


MAX_ERRORS_SHOWN = 100  # items' errors in an answer; "rejected" counts them all


async def post_articles(request: Request) -> Response:
    """One SPEC §3 object or an array; invalid items are reported, valid ones kept."""
    w = web(request)
    text = await json_text(request)
    try:
        # Off the event loop: a million-item body takes seconds to decode, and the other
        # requests (pages, clicks, health checks) must not wait for it.
        items = await run_in_threadpool(decode_body, text)
    except InputError as exc:
        raise WebError(400, f"The body is not valid JSON: {exc}") from exc
    if not items:
        raise WebError(400, "The array is empty: send at least one article.")
    report = await w.db(_ingest, w, items)
    request.state.audit = {
        "added": report.added,
        "updated": report.updated,
        "rejected": len(report.errors),
    }
    status = 422 if report.errors and not (report.added or report.updated) else 200
    return JSONResponse(
        {
            "added": report.added,
            "updated": report.updated,
            "rejected": len(report.errors),
            # The first ones: a million bad items would otherwise be a 100 MB answer.
            "errors": [
                {"position": e.position, "field": e.field, "problem": e.problem}
                for e in report.errors[:MAX_ERRORS_SHOWN]
            ],
        },
        status_code=status,
    )


def _ingest(w: Web, items: list[tuple[int, Any]]) -> IngestReport:
    with w.sessions.begin() as session:
        return ingest(session, items)


# (method, path under /api, endpoint); each one is described in openapi.PATHS too.
ENDPOINTS: list[tuple[str, str, Endpoint]] = [
    ("POST", "/articles", post_articles),
    ("POST", "/articles/{article:path}/pin", api_articles.post_pin),
    ("DELETE", "/articles/{article:path}/pin", api_articles.delete_pin),
    ("POST", "/articles/{article:path}/hold", api_articles.post_hold),
    ("DELETE", "/articles/{article:path}/hold", api_articles.delete_hold),
    ("GET", "/subscribers", api_lists.list_subscribers),
    ("GET", "/subscribers/export", api_lists.export_subscribers),
    ("GET", "/suppressions", api_lists.list_suppressions),
    ("GET", "/stats", api_editions.stats),
    ("GET", "/editions/preview", api_editions.preview_edition),
    ("POST", "/editions/trigger", api_editions.trigger_edition),
    ("POST", "/editions/test", api_editions.test_edition),
    ("POST", "/bounces", api_bounces.post_bounce),
    ("GET", "/engagement/editions", api_engagement.list_editions),
    ("GET", "/engagement/editions/{id}", api_engagement.one_edition),
    ("GET", "/engagement/top", api_engagement.top_stories),
    ("GET", "/engagement/days", api_engagement.click_days),
]
# Admin actions that are logged (writes, and the export that hands out every address).
AUDITED = {
    ("POST", "/articles"): "articles.add",
    ("POST", "/articles/{article:path}/pin"): "articles.pin",
    ("DELETE", "/articles/{article:path}/pin"): "articles.unpin",
    ("POST", "/articles/{article:path}/hold"): "articles.hold",
    ("DELETE", "/articles/{article:path}/hold"): "articles.release",
    ("GET", "/subscribers/export"): "subscribers.export",
    ("POST", "/editions/trigger"): "editions.trigger",
    ("POST", "/editions/test"): "editions.test",
    ("POST", "/bounces"): "bounces.report",
}
# Readable without the token: the API's description holds no data (see openapi.py).
PUBLIC_ENDPOINTS: list[tuple[str, str, Endpoint]] = [
    ("GET", "/openapi.json", openapi.serve),
]


def routes() -> list[Mount]:
    guarded = [
        Route(path, admin(fn, AUDITED.get((method, path))), methods=[method])
        for method, path, fn in ENDPOINTS
    ]
    public = [Route(path, fn, methods=[method]) for method, path, fn in PUBLIC_ENDPOINTS]
    return [Mount("/api", routes=guarded + public)]
