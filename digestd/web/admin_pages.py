"""What every page of ``/admin`` shares: the operator's sign-in guard, the page frame (the
navigation, a notice after an action, the sign-out form, auto-refresh) and the reading of
an action's form (CSRF first).

An action is a POST that answers ``303`` back to a page with ``?done=WORD``: reloading
the page then repeats nothing, and the page says what was done (each module maps its
words to sentences, so a link cannot make the page say anything else but counts:
``&n=12`` fills a sentence's ``{n}``, ``&queued=3`` its ``{queued}``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digestd.web.admin_auth import enabled, signed_in
from digestd.web.body import Input, read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

Endpoint = Callable[[Request], Awaitable[Response]]
SECTIONS = (
    ("overview", "Overview", "/admin"),
    ("subscribers", "Subscribers", "/admin/subscribers"),
    ("articles", "Articles", "/admin/articles"),
    ("feeds", "Feeds", "/admin/feeds"),
    ("editions", "Editions", "/admin/editions"),
)
REFRESH_SECONDS = 10  # while an edition is sending or an import runs
_COUNT = re.compile(r"\{(\w+)\}")


def login_page(request: Request, w: Web, error: str = "", status: int = 200) -> Response:
    """The sign-in form; after signing in the operator lands on the page they asked for."""
    csrf = w.csrf.session(request)
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    context = {
        "title": "Operator sign-in",
        "error": error,
        "csrf": csrf.token("admin-login", "-"),
        "next": wanted if request.method in ("GET", "HEAD") else "/admin",
    }
    return csrf.attach(request, w.pages.render("admin_login.html", context, status))


def safe_next(raw: str) -> str:
    """Where to go after signing in: a page of ``/admin``, never another site."""
    if raw.startswith("/admin") and "//" not in raw and "\\" not in raw:
        return raw
    return "/admin"


def operator(endpoint: Endpoint) -> Endpoint:
    """Only a signed-in operator gets through; a GET from anyone else is the sign-in form."""

    async def guarded(request: Request) -> Response:
        w = web(request)
        enabled(w)
        if not await signed_in(request):
            if request.method in ("GET", "HEAD"):
                return login_page(request, w)
            raise WebError(401, "Your operator session has ended: sign in at /admin again.")
        return await endpoint(request)

    return guarded


def page(
    request: Request,
    template: str,
    section: str,
    context: Mapping[str, Any],
    *,
    notices: Mapping[str, str] | None = None,
    status: int = 200,
) -> Response:
    """An admin page in its frame. ``notices``: what each ``?done=`` word says."""
    w = web(request)
    csrf = w.csrf.session(request)
    notice = (notices or {}).get(request.query_params.get("done", ""))
    if notice is not None:
        notice = _COUNT.sub(lambda m: _count(request.query_params.get(m[1], "")), notice)
    full = {
        "section": section,
        "sections": SECTIONS,
        "notice": notice,
        "error": None,
        "error_field": None,  # the id of the field ``error`` is about, if it is one field's
        "refresh": 0,
        "now": w.clock(),
        **context,
        "csrf": csrf.token,
        # A page that answers a form (a refusal, or a result a redirect could not carry)
        # never reloads itself: the browser would send the form again.
        **({"refresh": 0} if request.method == "POST" else {}),
        "logout_csrf": csrf.token("admin-logout", "-"),
    }
    return csrf.attach(request, w.pages.render(template, full, status))


def refusal(labels: Mapping[str, str], field: str | None, message: str) -> tuple[str, str | None]:
    """A refused field's message in the operator's words ("Feed URL: …", never the form's
    internal name "url: …"), and that field's key in ``labels`` (None: the whole form's)."""
    if field is None or field not in labels:
        return message, None
    return f"{labels[field]}: {message.removeprefix(f'{field}: ')}", field


def _count(raw: str) -> str:
    """A count from the query, with thousands separators; anything else reads "some"."""
    return f"{int(raw):,}" if raw.isascii() and raw.isdigit() and len(raw) < 10 else "some"


async def action_form(request: Request, purpose: str, subject: str = "-") -> Input:
    """The form of an action, once its CSRF token is checked (403 otherwise)."""
    data = await read_input(request, allow_json=False)
    web(request).csrf.check(request, data.text(CSRF_FIELD, 500), purpose, subject)
    return data


def done(path: str, word: str, **query: str) -> Response:
    """Back to ``path`` saying ``word`` was done (Post/Redirect/Get)."""
    return RedirectResponse(f"{path}?{urlencode({**query, 'done': word})}", status_code=303)
