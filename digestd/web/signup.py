"""The signup page and its form: ``GET /subscribe`` (prefilled from a signup link) and
``POST /subscribe`` (our page's form, a form embedded on the site, or JSON), answered with
the same "check your inbox" whatever the address (SPEC §1, §6).

No answer depends on whether the address is known: new, pending, active and suppressed
addresses all get the same "check your inbox", in the same time, because the signup's
work and its email both happen after the answer. A
signup stores nothing about an address that exists: what it asked for rides in the
confirmation link (:mod:`digestd.readers.signups`), and applies when the link is followed
(:mod:`digestd.web.confirm`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digestd.errors import first_line
from digestd.readers.signups import SignupRequest, SignupResult, request_signup
from digestd.web.body import Input, read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.origins import Sender, sender
from digestd.web.signup_form import HONEYPOT, SignupForm, prefilled, read_signup, render_form

log = logging.getLogger("digestd.web")

CHECK_INBOX = (
    "If that address can receive our digests, a confirmation email is on its way. "
    "Click the link inside to start your subscription; nothing is sent until you do. "
    "Nothing after a few minutes? Look in your spam folder, or try again in 10 minutes."
)
EXPIRED_FORM = (
    "This form has expired or did not come from this site. Your choices are kept below: "
    "check them and press Subscribe again (cookies must be enabled)."
)
FOREIGN = (
    "This signup form was sent from a site that may not post it. Sign up on our own page instead."
)


def clean(text: str, limit: int) -> str:
    """Printable text only, for values we record but did not ask the reader to type."""
    return "".join(c for c in text if c.isprintable())[:limit]


async def subscribe_page(request: Request) -> Response:
    w = web(request)
    form = prefilled(dict(request.query_params), w.settings.default_timezone)
    # Where the reader came from and which link they used: part of the consent record.
    parts = []
    if request.url.query:
        parts.append(f"link: ?{request.url.query}")
    if request.headers.get("referer"):
        parts.append(f"referrer: {request.headers['referer']}")
    form.source = clean("; ".join(parts), 1000)
    return render_form(request, w, form, 400 if form.errors else 200)


def check_inbox(w: Web, data: Input, task: BackgroundTask | None) -> Response:
    if data.is_json:
        return JSONResponse(
            {"status": "check-your-inbox", "message": CHECK_INBOX}, status_code=202, background=task
        )
    response = w.pages.message("Check your inbox", CHECK_INBOX)
    response.background = task
    return response


def _csrf_ok(request: Request, w: Web, data: Input) -> bool:
    try:
        w.csrf.check(request, data.text(CSRF_FIELD, 500), "subscribe", "-")
    except WebError:
        return False
    return True


async def subscribe(request: Request) -> Response:
    w = web(request)
    now = w.clock()
    came_from = sender(request, w.settings)
    if came_from is Sender.FOREIGN:
        raise WebError(403, FOREIGN, title="Not allowed", field="origin")
    data = await read_input(request)
    # JSON needs no token: a cross-site page cannot send it without a CORS preflight, which
    # only the site origins pass. Nor does a form from a site origin (see web/origins.py).
    if not data.is_json and came_from is Sender.OWN and not _csrf_ok(request, w, data):
        form, _, _ = read_signup(data, w.settings.default_timezone)
        form.errors = {"form": EXPIRED_FORM}
        return render_form(request, w, form, 403)
    w.count_signup_request(
        request, now, "Too many signups from your network. Please try again in an hour."
    )
    if _raw_honeypot(data):
        return check_inbox(w, data, None)  # a bot: look the same, store and send nothing
    form, email, prefs = read_signup(data, w.settings.default_timezone)
    if prefs is None:
        if data.is_json:
            raise form.json_error()
        return render_form(request, w, form, 400)
    signup_request = SignupRequest(prefs, _source(request, form, came_from))
    return check_inbox(w, data, BackgroundTask(_after_answer, w, email, signup_request, now))


def _raw_honeypot(data: Input) -> bool:
    value = data.data.get(HONEYPOT)
    return bool(value) and value != [""]


def _source(request: Request, form: SignupForm, came_from: Sender) -> str:
    if form.source:
        return clean(form.source, 1000)
    parts = []
    if came_from is Sender.SITE:
        parts.append(f"form on {request.headers.get('origin', '')}")
    parts.append(f"referrer: {request.headers.get('referer', '')}")
    return clean("; ".join(parts), 1000)


async def _after_answer(w: Web, email: str, request: SignupRequest, now: datetime) -> None:
    """The signup itself, once the answer is out. Its work differs by what the address is
    (a suppressed one needs no write, a new one inserts a row), and so would the time the
    answer took: a stranger timing it could tell which addresses are known."""
    try:
        signup = await w.db(_signup, w, email, request, now)
    except SQLAlchemyError as exc:
        log.error(
            "signup not stored (the reader was told to check their inbox and may try "
            "again): %s: %s",
            type(exc).__name__,
            first_line(exc),
            extra={"email": email},
        )
        return
    task = w.email_task(signup, now)
    if task is not None:
        await task()


def _signup(w: Web, email: str, request: SignupRequest, now: datetime) -> SignupResult:
    for attempt in (1, 2):
        try:
            with w.sessions.begin() as session:
                return request_signup(session, email, request, now, w.policy.signup_limits)
        except IntegrityError:
            # Two signups for one new address at once: the other inserted it; go again
            # and find it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


ROUTES = [
    Route("/subscribe", subscribe_page, methods=["GET"]),
    Route("/subscribe", subscribe, methods=["POST"]),
]
