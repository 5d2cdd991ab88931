"""What the pages behind a reader's links share: reading a link's token, the reader as a
page shows them (with what they get next), and the answer when there is nobody left."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from digestd.models import Subscriber
from digestd.readers.subscribers import Schedule, by_public_id, frequency_name
from digestd.readers.upcoming import local_day, upcoming
from digestd.tokens import MAX_AGE, SAMPLE_READERS, BadToken, ExpiredToken, Purpose
from digestd.web.context import Web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

INVALID = (
    "This link is not valid. It may have been cut short by your email program: "
    "open it from the email again."
)
GONE = WebError(
    410,
    "We hold no subscription for this link: it was deleted. You can sign up again at any time.",
    title="No subscription",
)


SAMPLE = WebError(
    200,
    "This link comes from a test send or a preview. In a reader's own email it opens their "
    "page (their preferences, their unsubscribe, the email in a browser); this copy was "
    "made for no reader, so nothing was changed.",
    title="A link from a test copy",
)


def someone(public_id: str) -> str:
    """``public_id``, unless it is a test copy's (:data:`SAMPLE`, said instead of "deleted")."""
    if public_id in SAMPLE_READERS:
        raise SAMPLE
    return public_id


def link_id(w: Web, purpose: Purpose, token: str, *, allow_expired: bool = False) -> str:
    """The public id a link names; a clear 400 if it is forged, cut short or expired."""
    try:
        return someone(w.tokens.read(purpose, token))
    except ExpiredToken as exc:
        if allow_expired and exc.payload is not None:
            return exc.payload
        raise WebError(
            400,
            "This link has expired. Use the link in a more recent email from us.",
            title="Expired link",
        ) from exc
    except BadToken as exc:
        raise WebError(400, INVALID, title="Invalid link") from exc


def preferences_id(request: Request, w: Web) -> str | Response:
    """The id of a preferences link, or the "expired: email me a fresh link" page."""
    token = request.path_params["token"]
    try:
        return someone(w.tokens.read(Purpose.PREFERENCES, token))
    except ExpiredToken as exc:
        if exc.payload is None:
            raise WebError(400, INVALID, title="Invalid link") from exc
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
        raise WebError(400, INVALID, title="Invalid link") from exc


def snapshot(subscriber: Subscriber, schedule: Schedule) -> dict[str, Any]:
    """The reader as the pages show them, read while the session is open."""
    until = subscriber.paused_until
    return {
        "email": subscriber.email,
        "status": subscriber.status,
        "categories": subscriber.category_slugs,
        "frequency": frequency_name(subscriber),
        "timezone": subscriber.timezone,  # as the form shows it (what was typed, after a mistake)
        "zone": subscriber.timezone,  # as stored
        "wants_daily": subscriber.wants_daily,
        "wants_weekly": subscriber.wants_weekly,
        "paused_until": local_day(until, subscriber.timezone) if until else "",
        "pause_ends": until,  # the instant, for the pause choices that fit it
        "upcoming": [{"name": u.name, "when": u.when} for u in upcoming(subscriber, schedule)],
        "learns": subscriber.learns,  # their clicks shape their digest (reader mode)
    }


def load_reader(w: Web, public_id: str) -> dict[str, Any] | None:
    with w.sessions() as session:
        subscriber = by_public_id(session, public_id)
        return snapshot(subscriber, w.schedule) if subscriber else None
