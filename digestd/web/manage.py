"""A subscriber's preferences page, reached through the signed link in every email:
categories, frequency, timezone (the picker of the signup page), pause for 1, 2 or 4 weeks
or until a date, resume, unsubscribe, delete my data; and, after every change, what they
get next and exactly when. The link lives 60 days after its email; an expired one offers
to email a fresh one. Subscribing again after an unsubscribe takes a new confirmation
email, never just this link.

GET never changes anything (mail scanners follow links); POST acts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.content.categories import ALL_NAME, CATEGORIES
from digestd.errors import ValidationError
from digestd.models import SubscriberStatus
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
from digestd.readers.subscribers import RENAMED_ZONES, by_public_id, parse_preferences
from digestd.readers.sunset import end_by_hand
from digestd.tokens import Purpose
from digestd.web import pausing
from digestd.web.body import Input, read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.reader_pages import GONE, link_id, load_reader, preferences_id, snapshot
from digestd.web.zones import find_zone, zone_options

ACTIONS = ("save", "pause", "resume", "unsubscribe", "delete", "learning")
# Who must confirm from the inbox before digests (start again), and the consent source.
_CONFIRM_FIRST = {
    SubscriberStatus.UNSUBSCRIBED: "preferences page: subscribe again",
    SubscriberStatus.PENDING: "preferences page: confirmation sent again",
}
NOTICES = {
    "save": "Your preferences are saved.",
    "pause": "Your digests are paused.",  # the page says until when, just below
    "resume": "Your digests are back on.",
    "unsubscribe": "You're unsubscribed. We won't send you digests any more.",
    "learning": "Saved: how your clicks are used.",
    "subscribe-again": (
        "We've emailed you a link to confirm. Your digests start again once you follow it."
    ),
    "confirm-again": "We've emailed you the link to confirm again. Your digests start once "
    "you follow it.",
    # Why is not said (signups.Held): a link sent minutes ago, or too many asked for.
    "sent-lately": "No new link was sent just now: one may have reached you a few minutes "
    "ago (look in your spam folder too). Try again in a little while.",
}
# A pause or resume that changed nothing, by where the reader stands: never "paused".
UNCHANGED = {
    SubscriberStatus.PENDING: (
        "Nothing to change: your subscription isn't confirmed yet. Follow the link in the "
        "email we sent you, and your digests start."
    ),
    SubscriberStatus.ACTIVE: "Nothing to change: your digests are on.",
}
NO_DIGESTS = "Nothing to change: no digests are sent to this address."
CHECK_INBOX = (
    "If we still hold a subscription for this link, a fresh link to your preferences is on "
    "its way to your inbox."
)


def _page(
    request: Request,
    w: Web,
    public_id: str,
    reader: dict[str, Any],
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    csrf = w.csrf.session(request)
    now = w.clock()
    first_day = pausing.today(reader["zone"], now)
    ends = reader["pause_ends"]
    chosen = pausing.current_choice(
        reader["status"] == SubscriberStatus.PAUSED, ends, reader["zone"], now
    )
    response = w.pages.render(
        "preferences.html",
        {
            "reader": reader,
            "categories": CATEGORIES,
            "all_name": ALL_NAME,
            "zones": zone_options(now),
            "renamed_zones": RENAMED_ZONES,
            "pause_choices": pausing.LABELS,
            "pause_chosen": chosen,
            # The day the current pause ends, for the date field when no week fits it.
            "pause_day": pausing.today(reader["zone"], ends).isoformat()
            if chosen == "date"
            else "",
            "pause_min": (first_day + timedelta(days=1)).isoformat(),  # a date after today
            "pause_max": (first_day + pausing.LONGEST).isoformat(),
            "notice": notice,
            "errors": defaultdict(str, errors or {}),
            "csrf": csrf.token("preferences", public_id),
            "action_url": request.url.path,
            "tracking": w.settings.track_clicks,
        },
        status,
    )
    return csrf.attach(request, response)


async def preferences_page(request: Request) -> Response:
    w = web(request)
    public_id = preferences_id(request, w)
    if isinstance(public_id, Response):
        return public_id
    reader = await w.db(load_reader, w, public_id)
    if reader is None:
        raise GONE
    return _page(request, w, public_id, reader)


async def preferences_post(request: Request) -> Response:
    w = web(request)
    public_id = preferences_id(request, w)
    if isinstance(public_id, Response):
        return public_id
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "preferences", public_id)
    action = data.text("action", 20, required=True)
    if action not in ACTIONS:
        raise WebError(400, f"Unknown action {action[:20]!r}.", field="action")
    if action == "delete":
        return await _delete(request, w, public_id, data)
    try:
        reader, signup, changed = await w.db(_act, w, public_id, action, data)
    except (ValidationError, WebError) as exc:
        return await _refused(request, w, public_id, data, exc)
    if reader is None:
        raise GONE
    notice = NOTICES[action]
    if signup is not None and signup.notice is None:  # held back by the signup limits
        notice = NOTICES["sent-lately"]
    elif signup is not None:
        pending = reader["status"] == SubscriberStatus.PENDING
        notice = NOTICES["confirm-again" if pending else "subscribe-again"]
    if not changed:
        notice = UNCHANGED.get(SubscriberStatus(reader["status"]), NO_DIGESTS)
    response = _page(request, w, public_id, reader, notice=notice)
    if signup is not None:
        response.background = w.email_task(signup, w.clock())
    return response


async def _refused(
    request: Request, w: Web, public_id: str, data: Input, exc: ValidationError | WebError
) -> Response:
    """The page again, the problem by its field, showing what they chose (not what is
    stored) so they can fix just the bad part."""
    reader = await w.db(load_reader, w, public_id)
    if reader is None:
        raise GONE from exc
    field = exc.field or "form"
    problem = exc.problem if isinstance(exc, ValidationError) else exc.message
    raw = data.data
    shown = {
        "categories": [c.strip().lower() for c in raw.get("categories", []) if isinstance(c, str)],
        "frequency": _last(raw.get("frequency")) or reader["frequency"],
        "timezone": _last(raw.get("timezone")) or reader["timezone"],
    }
    if data.text("action", 20) == "save":
        reader = {**reader, **shown}
    message = problem[:1].upper() + problem[1:].rstrip(".") + "."
    return _page(request, w, public_id, reader, errors={field: message}, status=400)


def _last(value: object) -> str:
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value if isinstance(value, str) else ""


async def _delete(request: Request, w: Web, public_id: str, data: Input) -> Response:
    if data.text("confirm_delete", 10) != "yes":
        reader = await w.db(load_reader, w, public_id)
        if reader is None:
            raise GONE
        problem = "Tick the box to confirm that you want your data deleted."
        return _page(request, w, public_id, reader, errors={"delete": problem}, status=400)
    await w.db(_erase, w, public_id)
    return w.pages.message(
        "Your data is deleted",
        "We deleted your email address, preferences and history. We keep only a one-way "
        "hash of the address, so that no list or import mails it by mistake. You can sign "
        "up again at any time: as the first time, digests start once you confirm from "
        "your inbox.",
    )


def _act(
    w: Web, public_id: str, action: str, data: Input
) -> tuple[dict[str, Any] | None, SignupResult | None, bool]:
    """The reader after ``action``, the confirmation email it asks for, and whether it
    changed anything (a pause of a reader who gets no digests does not)."""
    now = w.clock()
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id, lock=True)
        if subscriber is None:
            return None, None, False
        if action == "resume" and subscriber.status in _CONFIRM_FIRST:
            # A preferences link gets forwarded and outlives the unsubscribe: coming back
            # takes a new confirmation from the inbox, like a signup. A reader who never
            # confirmed gets the confirmation again.
            request = SignupRequest.of(
                subscriber, _CONFIRM_FIRST[SubscriberStatus(subscriber.status)]
            )
            signup = request_signup(session, subscriber.email, request, now, w.policy.signup_limits)
            return snapshot(subscriber, w.schedule), signup, True
        changed = True
        if action in ("save", "pause", "resume"):
            end_by_hand(subscriber, now)
        if action == "save":
            prefs = parse_preferences(
                data.items("categories", 40),
                data.text("frequency", 10, required=True),
                find_zone(data.text("timezone", 64)),
                subscriber.timezone,
            )
            change_preferences(subscriber, prefs, now, w.schedule)
        elif action == "learning":
            learn_from_clicks(session, subscriber, data.text("learns", 10) == "yes")
        elif action == "pause":
            choice = data.text("pause_for", 10)
            until = pausing.pause_end(
                choice, data.text("pause_until", 10), subscriber.timezone, now
            )
            changed = pause(subscriber, until)
        elif action == "resume":
            changed = resume(subscriber, now, w.schedule)
        elif action == "unsubscribe" and unsubscribe(subscriber, now, via="preferences"):
            w.service.metrics.unsubscribes.labels("preferences").inc()
        session.flush()
        return snapshot(subscriber, w.schedule), None, changed


def _erase(w: Web, public_id: str) -> None:
    with w.sessions.begin() as session:
        subscriber = by_public_id(session, public_id, lock=True)
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
    w.count_signup_request(request, now)
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
