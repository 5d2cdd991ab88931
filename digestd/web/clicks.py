"""``GET /c/{token}``: a tracked article link (SPEC §6, §11).

The token names the email (its queue row) and the link's number, signed
(:meth:`~digestd.tokens.Tokens.read_click`); never a URL. The answer is a 303 to the
article's stored URL, or to the archive when the article or the email's record is gone.
A token that does not verify gets a 400 page and nothing is recorded. ``HEAD`` (link
checkers) and ``DIGESTD_TRACK_CLICKS=off`` redirect without recording.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from digestd.readers.clicks import Target, receive, target
from digestd.tokens import BadToken
from digestd.web.context import Web, web
from digestd.web.errors import WebError


def _follow(w: Web, delivery_id: int, position: int, record: bool, now: datetime) -> Target | None:
    with w.sessions.begin() as session:
        found = target(session, delivery_id, position)
        if found is not None and record:
            receive(session, delivery_id, position, now)
        return found


async def click(request: Request) -> Response:
    w = web(request)
    try:
        delivery_id, position = w.tokens.read_click(request.path_params["token"])
    except BadToken as exc:
        raise WebError(
            400,
            "This link is not valid: it may have been cut short or changed. The stories are "
            "in the email itself, and in the archive.",
            title="Invalid link",
        ) from exc
    record = request.method == "GET" and w.settings.tracks_clicks
    found = await w.db(_follow, w, delivery_id, position, record, w.clock())
    url = found.url if found is not None and found.url else f"{w.settings.base_url}/archive"
    return RedirectResponse(url, status_code=303)


ROUTES = [Route("/c/{token}", click, methods=["GET"])]
