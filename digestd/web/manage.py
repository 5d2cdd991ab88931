"""A subscriber's preferences page, reached through the signed link in every email:
categories, frequency, timezone, pause/resume, unsubscribe, delete my data. The link lives
60 days after its email; an expired one offers to email a fresh one. Subscribing again
after an unsubscribe takes a new confirmation email, never just this link.

GET never changes anything (mail scanners follow links); POST acts.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.content.categories import ALL_NAME, CATEGORIES
from digestd.errors import ValidationError
from digestd.models import Subscriber, SubscriberStatus
from digestd.readers.clicks import learn_from_clicks
from digestd.readers.lifecycle import (
    change_preferences,
    erase_subscriber,
    pause,
    resume,
    unsubscribe,
)
from digestd.readers.signups import (
    SignupRequest,
    SignupResult,
    request_manage_link,
    request_signup,
)
from digestd.readers.subscribers import by_public_id, frequency_name, parse_preferences
from digestd.readers.sunset import end_by_hand
from digestd.tokens import MAX_AGE, BadToken, ExpiredToken, Purpose
from digestd.web.body import Input, read_input
from digestd.web.context import Web, client_ip, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

ACTIONS = ("save", "pause", "resume", "unsubscribe", "delete", "learning")
NOTICES = {
    "save": "Your preferences are saved.",
    "pause": "Your digests are paused. Resume them whenever you like.",
    "resume": "Your digests are back on. The next one arrives at the usual time.",
    "unsubscribe": "You're unsubscribed. We won't send you digests any more.",
    "learning": "Saved: how your clicks are used.",
    "subscribe-again": (
        "We've emailed you a link to confirm. Your digests start again once you follow it."
    ),
}
CHECK_INBOX = (
    "If we still hold a subscription for this link, a fresh link to your preferences is on "
    "its way to your inbox."
)
_INVALID = (
    "This link is not valid. It may have been cut short by your email program: "
    "open it from the email again."
)


@cache
def timezones() -> list[str]:
    """Region/City names (what browsers report), plus UTC."""
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
    return [*zones, "UTC"]


def link_id(w: Web, purpose: Purpose, token: str, *, allow_expired: bool = False) -> str:
    """The public id a link names; a clear 400 if it is forged, cut short or expired."""
    try:
        return w.tokens.read(purpose, token)
    except ExpiredToken as exc:
        if allow_expired and exc.payload is not None:
            return exc.payload
        raise WebError(
            400,
            "This link has expired. Use the link in a more recent email from us.",
            title="Expired link",
        ) from exc
    except BadToken as exc:
        raise WebError(400, _INVALID, title="Invalid link") from exc


def _preferences_id(request: Request, w: Web) -> str | Response:
    """The id of a preferences link, or the "expired: email me a fresh link" page."""
    token = request.path_params["token"]
    try:
        return w.tokens.read(Purpose.PREFERENCES, token)
    except ExpiredToken as exc:
        if exc.payload is None:
            raise WebError(400, _INVALID, title="Invalid link") from exc
        csrf = w.csrf.session(request)
        page = w.pages.message(
            "This link has expired",
            f"Links to your preferences work for {MAX_AGE[Purpose.PREFERENCES].days} days "
            "after the email that carried them. We can email you a fresh one.",
            400,
            form={
                "action": "/preferences/resend",
                "fields": {"token": token, CSRF_FIELD: csrf.token("fresh-link", exc.payload)},
                "button": "Email me a fresh link",
            },
        )
        return csrf.attach(request, page)
    except BadToken as exc:
        raise WebError(400, _INVALID, title="Invalid link") from exc


GONE = WebError(
    410,
    "We hold no subscription for this link: it was deleted. You can sign up again at any time.",
    title="No subscription",
)


def _snapshot(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "status": subscriber.status,
        "categories": subscriber.category_slugs,
        "frequency": frequency_name(subscriber),
        "timezone": subscriber.timezone,
        "learns": subscriber.learns,
    }


def load_reader(w: Web, public_id: str) -> dict[str, Any] | None:
    with w.sessions() as session:
        subscriber = by_public_id(session, public_id)
        return _snapshot(subscriber) if subscriber else None


def _page(
    request: Request,
    w: Web,
    public_id: str,
    reader: dict[str, Any],
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    csrf = w.csrf.session(request)
    response = w.pages.render(
        "preferences.html",
        {
            "reader": reader,
            "categories": CATEGORIES,
            "all_name": ALL_NAME,
            "timezones": timezones(),
            "notice": notice,
            "error": error,
            "csrf": csrf.token("preferences", public_id),
            "action_url": request.url.path,
            "tracking": w.settings.track_clicks,
        },
        status,
    )
    return csrf.attach(request, response)


async def preferences_page(request: Request) -> Response:
    w = web(request)
    public_id = _preferences_id(request, w)
    if isinstance(public_id, Response):
        return public_id
    reader = await w.db(load_reader, w, public_id)
    if reader is None:
        raise GONE
    return _page(request, w, public_id, reader)


async def preferences_post(request: Request) -> Response:
    w = web(request)
    public_id = _preferences_id(request, w)
    if isinstance(public_id, Response):
        return public_id
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "preferences", public_id)
    action = data.text("action", 20, required=True)
    if action not in ACTIONS:
        raise WebError(400, f"Unknown action {action[:20]!r}.", field="action")
    if action == "delete":
        if data.text("confirm_delete", 10) != "yes":
            reader = await w.db(load_reader, w, public_id)
            if reader is None:
                raise GONE
            return _page(
                request,
                w,
                public_id,
                reader,
                error="Tick the box to confirm that you want your data deleted.",
                status=400,
            )
        await w.db(_erase, w, public_id)
        return w.pages.message(
            "Your data is deleted",
            "We deleted your email address, preferences and history. We keep only a one-way "
            "hash of the address so that it is never mailed by mistake.",
        )
    try:
        reader, signup = await w.db(_act, w, public_id, action, data)
    except ValidationError as exc:
        reader = await w.db(load_reader, w, public_id)
        if reader is None:
            raise GONE from exc
        # Show what they chose, not what is stored, so they can fix just the bad part.
        reader = {
            **reader,
            "categories": [c.strip().lower() for c in data.items("categories", 40)],
            "frequency": data.text("frequency", 10),
        }
        return _page(
            request,
            w,
            public_id,
            reader,
            error=f"{exc.field.capitalize()}: {exc.problem}",
            status=400,
        )
    if reader is None:
        raise GONE
    notice = NOTICES["subscribe-again" if signup else action]
    response = _page(request, w, public_id, reader, notice=notice)
    if signup is not None:
        response.background = w.email_task(signup, w.clock())
    return response


def _act(
    w: Web, public_id: str, action: str, data: Input
) -> tuple[dict[str, Any] | None, SignupResult | None]:
    now = w.clock()
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is None:
            return None, None
        if action == "resume" and subscriber.status == SubscriberStatus.UNSUBSCRIBED:
            # A preferences link gets forwarded and outlives the unsubscribe: coming back
            # takes a new confirmation from the inbox, like a signup.
            request = SignupRequest.of(subscriber, "preferences page: subscribe again")
            signup = request_signup(session, subscriber.email, request, now, w.policy.signup_limits)
            return _snapshot(subscriber), signup
        if action in ("save", "pause", "resume"):
            end_by_hand(subscriber, now)
        if action == "save":
            prefs = parse_preferences(
                data.items("categories", 40),
                data.text("frequency", 10, required=True),
                data.text("timezone", 64),
                subscriber.timezone,
            )
            change_preferences(subscriber, prefs, now, w.schedule)
        elif action == "learning":
            learn_from_clicks(session, subscriber, data.text("learns", 10) == "yes")
        elif action == "pause":
            pause(subscriber)
        elif action == "resume":
            resume(subscriber, now, w.schedule)
        elif action == "unsubscribe" and unsubscribe(subscriber, now, via="preferences"):
            w.service.metrics.unsubscribes.labels("preferences").inc()
        session.flush()
        return _snapshot(subscriber), None


def _erase(w: Web, public_id: str) -> None:
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is not None:
            erase_subscriber(session, subscriber, w.clock())


async def fresh_link(request: Request) -> Response:
    """Email a fresh preferences link for an expired (but authentic) one. The answer is the
    same whatever happens: it must not tell a link-holder whether the reader still exists."""
    w = web(request)
    now = w.clock()
    data = await read_input(request, allow_json=False)
    token = data.text("token", 2000, required=True)
    public_id = link_id(w, Purpose.PREFERENCES, token, allow_expired=True)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "fresh-link", public_id)
    if not w.signup_limiter.allow(client_ip(request), now):
        raise WebError(429, "Too many requests from your network. Please try again in an hour.")
    signup = await w.db(_fresh_link, w, public_id, now)
    page = w.pages.message("Check your inbox", CHECK_INBOX)
    page.background = w.email_task(signup, now)
    return page


def _fresh_link(w: Web, public_id: str, now: datetime) -> SignupResult:
    with w.sessions.begin() as session:
        return request_manage_link(session, public_id, now, w.policy.signup_limits)


ROUTES = [
    Route("/preferences/resend", fresh_link, methods=["POST"]),
    Route("/preferences/{token}", preferences_page, methods=["GET"]),
    Route("/preferences/{token}", preferences_post, methods=["POST"]),
]
