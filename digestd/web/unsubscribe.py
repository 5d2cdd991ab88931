"""Unsubscribing: the page behind every email's unsubscribe link, its RFC 8058 one-click
POST, and "changed your mind?".

An unsubscribe link is the most exposed link there is (forwarded emails, headers kept by
mail providers), so it can only ever mean less mail — unsubscribe, or the page's offers of
the weekly recap instead, a pause or fewer topics (:mod:`digestd.web.unsubscribe_instead`)
— and ask for a fresh confirmation email to subscribe again. It never opens the
preferences page and never resubscribes by itself.

GET never changes anything (mail scanners follow links); POST acts.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digestd.models import SubscriberStatus
from digestd.readers.lifecycle import unsubscribe
from digestd.readers.signups import SignupRequest, SignupResult, request_signup
from digestd.readers.subscribers import by_public_id
from digestd.tokens import Purpose
from digestd.web.body import read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.reader_pages import GONE, link_id, load_reader
from digestd.web.unsubscribe_instead import ROUTES as INSTEAD_ROUTES
from digestd.web.unsubscribe_instead import render_page

CHECK_INBOX = (
    "If this address can receive our digests again, a confirmation email is on its way. "
    "Your digests start again once you follow its link; until then nothing changes."
)


async def unsubscribe_page(request: Request) -> Response:
    """One button, and gentler offers beside it; nothing changes on GET, because link
    scanners GET every link."""
    w = web(request)
    public_id = link_id(w, Purpose.UNSUBSCRIBE, request.path_params["token"], allow_expired=True)
    reader = await w.db(load_reader, w, public_id)
    if reader is None:
        raise GONE
    if reader["status"] == SubscriberStatus.UNSUBSCRIBED:
        return _changed_your_mind(request, w, public_id)
    return render_page(request, w, public_id, reader)


async def unsubscribe_post(request: Request) -> Response:
    """RFC 8058 one-click: no cookie, no CSRF token; the signed link is the authority.

    An expired but authentic link still unsubscribes: a way out must never stop working.
    Answers 200 with no redirect and no cookie, and the same on every repeat.
    """
    w = web(request)
    public_id = link_id(w, Purpose.UNSUBSCRIBE, request.path_params["token"], allow_expired=True)
    data = await read_input(request, allow_json=False)
    if data.text("List-Unsubscribe", 20) != "One-Click":
        raise WebError(
            400,
            "Expected the body List-Unsubscribe=One-Click (RFC 8058).",
            field="List-Unsubscribe",
        )
    await w.db(_unsubscribe, w, public_id)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"status": "unsubscribed"})
    # The way back is on the GET page, which can set its CSRF cookie; this answer sets none.
    return w.pages.message(
        "You're unsubscribed",
        "We won't send you any more digests. Sorry to see you go.",
        action_url=request.url.path,
        action_label="Changed your mind?",
    )


def _unsubscribe(w: Web, public_id: str) -> None:
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id, lock=True)
        # None: erased, there is nobody left to mail
        if subscriber is not None and unsubscribe(subscriber, w.clock(), via="link"):
            w.service.metrics.unsubscribes.labels("link").inc()


def _changed_your_mind(request: Request, w: Web, public_id: str) -> Response:
    csrf = w.csrf.session(request)
    page = w.pages.message(
        "You're unsubscribed",
        "We won't send you any more digests. Changed your mind? We'll email you a link: "
        "your digests start again, with your old topics, once you follow it.",
        form={
            "action": f"{request.url.path}/resubscribe",
            "fields": {CSRF_FIELD: csrf.token("resubscribe", public_id)},
            "button": "Email me a link to subscribe again",
        },
    )
    return csrf.attach(request, page)


async def resubscribe(request: Request) -> Response:
    """Send a "welcome back, confirm to resume" email; the same answer whatever happens."""
    w = web(request)
    now = w.clock()
    public_id = link_id(w, Purpose.UNSUBSCRIBE, request.path_params["token"], allow_expired=True)
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "resubscribe", public_id)
    w.count_signup_request(request, now)
    signup = await w.db(_resubscribe, w, public_id, now)
    page = w.pages.message("Check your inbox", CHECK_INBOX)
    page.background = w.email_task(signup, now)
    return page


def _resubscribe(w: Web, public_id: str, now: datetime) -> SignupResult:
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is None or subscriber.status != SubscriberStatus.UNSUBSCRIBED:
            return SignupResult(None)
        request = SignupRequest.of(subscriber, "unsubscribe page: changed my mind")
        return request_signup(session, subscriber.email, request, now, w.policy.signup_limits)


ROUTES = [
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
    Route("/unsubscribe/{token}", unsubscribe_post, methods=["POST"]),
    Route("/unsubscribe/{token}/resubscribe", resubscribe, methods=["POST"]),
    *INSTEAD_ROUTES,
]
