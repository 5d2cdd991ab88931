"""``GET /c/{token}``: a tracked article link (SPEC §6, §11).

The token names the email (its queue row) and the link's number, signed
(:meth:`~digestd.tokens.Tokens.read_click`); never a URL. The answer is a 303 to the
article's stored URL, or to the archive when the article or the email's record is gone.
A token that does not verify gets a 400 page and nothing is recorded. ``HEAD`` (link
checkers) and ``DIGESTD_TRACK_CLICKS=off`` redirect without recording.
Each click is one row in ``click_inbox``, committed before the answer goes out
(:class:`~digestd.web.click_writer.ClickDesk`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from digestd.tokens import BadToken
from digestd.web.context import web
from digestd.web.errors import WebError


async def click(request: Request) -> Response:
    w = web(request)
    try:
        delivery_id, position = w.tokens.read_click(request.path_params["token"])
    except BadToken as exc:
        w.service.metrics.clicks.labels("refused").inc()
        raise WebError(
            400,
            "This link is not valid: it may have been cut short or changed. The stories are "
            "in the email itself, and in the archive.",
            title="Invalid link",
        ) from exc
    record = request.method == "GET" and w.settings.tracks_clicks
    found = await w.clicks.follow(delivery_id, position, w.clock() if record else None)
    if found is not None and found.url:
        w.service.metrics.clicks.labels("article").inc()
        return RedirectResponse(found.url, status_code=303)
    w.service.metrics.clicks.labels("archive").inc()
    return RedirectResponse(f"{w.settings.base_url}/archive", status_code=303)


ROUTES = [Route("/c/{token}", click, methods=["GET"])]
