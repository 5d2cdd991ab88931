"""A subscriber's own pages, reached through signed links in every email: preferences
(categories, frequency, timezone, pause/resume, unsubscribe, delete my data) and the
unsubscribe page with its RFC 8058 one-click POST.

GET never changes anything (mail scanners follow links); POST acts.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from zoneinfo import available_timezones

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digestd.content.categories import ALL_NAME, CATEGORIES
from digestd.errors import ValidationError
from digestd.models import Subscriber, SubscriberStatus
from digestd.readers.lifecycle import (
    by_public_id,
    change_preferences,
    erase_subscriber,
    pause,
    resume,
    unsubscribe,
)
from digestd.readers.subscribers import frequency_name, parse_preferences
from digestd.tokens import BadToken, ExpiredToken, Purpose
from digestd.web.body import Input, read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

ACTIONS = ("save", "pause", "resume", "unsubscribe", "delete")
NOTICES = {
    "save": "Your preferences are saved.",
    "pause": "Your digests are paused. Resume them whenever you like.",
    "resume": "Your digests are back on. The next one arrives at the usual time.",
    "unsubscribe": "You're unsubscribed. We won't send you digests any more.",
}
_INVALID = (
    "This link is not valid. It may have been cut short by your email program: "
    "open it from the email again."
)


@cache
def timezones() -> list[str]:
    """Region/City names (what browsers report), plus UTC."""
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
    return [*zones, "UTC"]


def _public_id(w: Web, purpose: Purpose, token: str, *, allow_expired: bool = False) -> str:
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


_GONE = WebError(
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
    }


def _load(w: Web, public_id: str) -> dict[str, Any] | None:
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
        },
        status,
    )
    return csrf.attach(request, response)


async def preferences_page(request: Request) -> Response:
    w = web(request)
    public_id = _public_id(w, Purpose.PREFERENCES, request.path_params["token"])
    reader = await w.db(_load, w, public_id)
    if reader is None:
        raise _GONE
    return _page(request, w, public_id, reader)


async def preferences_post(request: Request) -> Response:
    w = web(request)
    public_id = _public_id(w, Purpose.PREFERENCES, request.path_params["token"])
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "preferences", public_id)
    action = data.text("action", 20, required=True)
    if action not in ACTIONS:
        raise WebError(400, f"Unknown action {action[:20]!r}.", field="action")
    if action == "delete":
        if data.text("confirm_delete", 10) != "yes":
            reader = await w.db(_load, w, public_id)
            if reader is None:
                raise _GONE
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
        reader = await w.db(_act, w, public_id, action, data)
    except ValidationError as exc:
        reader = await w.db(_load, w, public_id)
        if reader is None:
            raise _GONE from exc
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
        raise _GONE
    return _page(request, w, public_id, reader, notice=NOTICES[action])


def _act(w: Web, public_id: str, action: str, data: Input) -> dict[str, Any] | None:
    now = w.clock()
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is None:
            return None
        if action == "save":
            prefs = parse_preferences(
                data.items("categories", 40),
                data.text("frequency", 10, required=True),
                data.text("timezone", 64),
                subscriber.timezone,
            )
            change_preferences(subscriber, prefs, now, w.schedule)
        elif action == "pause":
            pause(subscriber)
        elif action == "resume":
            resume(subscriber, now, w.schedule)
        elif action == "unsubscribe":
            unsubscribe(subscriber, now)
        session.flush()
        return _snapshot(subscriber)


def _erase(w: Web, public_id: str) -> None:
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is not None:
            erase_subscriber(session, subscriber, w.clock())


async def unsubscribe_page(request: Request) -> Response:
    """One button; nothing changes on GET, because link scanners GET every link."""
    w = web(request)
    token = request.path_params["token"]
    public_id = _public_id(w, Purpose.UNSUBSCRIBE, token, allow_expired=True)
    reader = await w.db(_load, w, public_id)
    if reader is None:
        raise _GONE
    if reader["status"] == SubscriberStatus.UNSUBSCRIBED:
        return _unsubscribed(w, public_id)
    return w.pages.render("unsubscribe.html", {"reader": reader, "action_url": request.url.path})


async def unsubscribe_post(request: Request) -> Response:
    """RFC 8058 one-click: no cookie, no CSRF token; the signed link is the authority.

    An expired but authentic link still unsubscribes: a way out must never stop working.
    Answers 200 with no redirect, and the same on every repeat.
    """
    w = web(request)
    public_id = _public_id(w, Purpose.UNSUBSCRIBE, request.path_params["token"], allow_expired=True)
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
    return _unsubscribed(w, public_id)


def _unsubscribe(w: Web, public_id: str) -> None:
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is not None:  # erased: there is nobody left to mail
            unsubscribe(subscriber, w.clock())


def _unsubscribed(w: Web, public_id: str) -> Response:
    return w.pages.message(
        "You're unsubscribed",
        "We won't send you any more digests. Sorry to see you go.",
        action_url=f"/preferences/{w.tokens.make(Purpose.PREFERENCES, public_id)}",
        action_label="Changed your mind? Manage preferences",
    )


ROUTES = [
    Route("/preferences/{token}", preferences_page, methods=["GET"]),
    Route("/preferences/{token}", preferences_post, methods=["POST"]),
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
    Route("/unsubscribe/{token}", unsubscribe_post, methods=["POST"]),
]
