"""Who may post the signup form: our own pages, and the site's pages named in
``DIGESTD_SITE_ORIGINS`` (a form embedded in an article page, or ``fetch`` with CORS).

An embedded form cannot carry our CSRF token: its page never saw our cookie. Browsers
send ``Origin`` with every cross-site POST and page scripts cannot change it, so the rule
is:

- ``Origin`` names a site origin: accepted without the token (a signup is anyone's
  request anyway; what the token stops is *other* sites using a visitor's browser);
- ``Origin`` names any other site: refused, token or not, nothing stored;
- ``Origin`` is ours, ``null`` or absent: the CSRF token decides for a form (our own pages
  send ``null``: they set ``Referrer-Policy: no-referrer``), and JSON needs none (no
  browser sends it cross-site without a CORS preflight, which only site origins pass).

:class:`SiteCors` answers the preflight and adds ``Access-Control-Allow-Origin`` for site
origins on ``/subscribe`` only; no credentials are ever allowed.
"""

from __future__ import annotations

import enum
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digestd.config import Settings

PATH = "/subscribe"
PREFLIGHT_MAX_AGE = 600


class Sender(enum.Enum):
    OWN = "own"  # our pages, or nobody said (no Origin, or "null"): the token decides
    SITE = "site"  # a page of DIGESTD_SITE_ORIGINS
    FOREIGN = "foreign"  # any other site


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower()


def sender(request: Request, settings: Settings) -> Sender:
    origin = request.headers.get("origin", "").strip().lower()
    if not origin or origin == "null":
        return Sender.OWN
    if origin in settings.http.site_origins:
        return Sender.SITE
    # Ours: the configured public URL, or the host this request was sent to (a browser
    # cannot send a cross-site Origin equal to our Host header).
    ours = {_netloc(settings.base_url), request.headers.get("host", "").lower()}
    return Sender.OWN if _netloc(origin) in ours - {""} else Sender.FOREIGN


class SiteCors:
    """CORS for the site origins on ``POST /subscribe``: the preflight, and the header
    that lets the site's script read the answer (errors included)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.origins = frozenset(settings.http.site_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin", "").strip().lower()
        allowed = origin in self.origins
        if scope["method"] == "OPTIONS" and origin:
            response = self._preflight(origin, allowed, headers)
            await response(scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _preflight(self, origin: str, allowed: bool, headers: dict[str, str]) -> Response:
        method = headers.get("access-control-request-method", "").upper()
        if not allowed or method != "POST":
            return PlainTextResponse(
                "This origin may not post the signup form (DIGESTD_SITE_ORIGINS).\n",
                status_code=403,
                headers={"Vary": "Origin"},
            )
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                "Vary": "Origin",
            },
        )
