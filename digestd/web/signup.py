"""The signup journey: the signup page, the "check your inbox" answer, confirmation, and a
fresh confirmation link when the first one expired (SPEC §1, §6).

No answer depends on whether the address is known: new, pending, active and suppressed
addresses all get the same "check your inbox", and the email leaves after the answer. A
signup stores nothing about an address that exists: what it asked for rides in the
confirmation link (:mod:`digestd.readers.signups`), and applies when the link is followed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digestd.content.categories import ALL_NAME, CATEGORIES, parse_categories
from digestd.errors import ValidationError
from digestd.mail.presentation import names_of
from digestd.readers.lifecycle import Click, Confirmation, confirm
from digestd.readers.signups import (
    CONSENT_TEXT,
    ConfirmLink,
    SignupRequest,
    SignupResult,
    request_fresh_confirmation,
    request_signup,
)
from digestd.readers.subscribers import (
    FREQUENCIES,
    RENAMED_ZONES,
    normalise_email,
    parse_preferences,
)
from digestd.tokens import BadToken, ExpiredToken, Purpose, Signed
from digestd.web.body import Input, read_input
from digestd.web.clients import client_address
from digestd.web.context import Web, client_ip, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

HONEYPOT = "website"  # hidden from people; bots fill every field they find
CHECK_INBOX = (
    "If that address can receive our digests, a confirmation email is on its way. "
    "Click the link inside to start your subscription; nothing is sent until you do. "
    "Nothing after a few minutes? Look in your spam folder, or try again in 10 minutes."
)
LABELS = {"email": "Email", "categories": "Categories", "frequency": "Frequency"}


def _clean(text: str, limit: int) -> str:
    """Printable text only, for values we record but did not ask the reader to type."""
    return "".join(c for c in text if c.isprintable())[:limit]


async def subscribe_page(request: Request) -> Response:
    w = web(request)
    params = request.query_params
    values: dict[str, Any] = {
        "email": "",
        "categories": [],
        "frequency": "daily",
        "timezone": w.settings.default_timezone,
    }
    error = None
    try:
        if params.get("categories"):
            values["categories"] = parse_categories(params["categories"])
        frequency = (params.get("frequency") or "daily").strip().lower()
        if frequency not in FREQUENCIES:
            raise ValidationError(
                "frequency", f"must be daily, weekly or both, got {frequency[:20]!r}"
            )
        values["frequency"] = frequency
    except ValidationError as exc:
        error = f"{LABELS.get(exc.field, exc.field)}: {exc.problem}"
    # Where the reader came from and which link they used: part of the consent record.
    parts = []
    if request.url.query:
        parts.append(f"link: ?{request.url.query}")
    if request.headers.get("referer"):
        parts.append(f"referrer: {request.headers['referer']}")
    values["source"] = _clean("; ".join(parts), 1000)
    return _form(request, w, values, error, 400 if error else 200)


def _form(
    request: Request, w: Web, values: dict[str, Any], error: str | None, status: int
) -> Response:
    csrf = w.csrf.session(request)
    response = w.pages.render(
        "subscribe.html",
        {
            "values": values,
            "error": error,
            "categories": CATEGORIES,
            "all_name": ALL_NAME,
            "all_chosen": "all" in values["categories"]
            or len(values["categories"]) == len(CATEGORIES),
            "consent_text": CONSENT_TEXT,
            "csrf": csrf.token("subscribe", "-"),
            "honeypot": HONEYPOT,
            "renamed_zones": RENAMED_ZONES,
        },
        status,
    )
    return csrf.attach(request, response)


def _check_inbox(w: Web, data: Input, task: BackgroundTask | None) -> Response:
    if data.is_json:
        return JSONResponse(
            {"status": "check-your-inbox", "message": CHECK_INBOX}, status_code=202, background=task
        )
    response = w.pages.message("Check your inbox", CHECK_INBOX)
    response.background = task
    return response


async def subscribe(request: Request) -> Response:
    w = web(request)
    now = w.clock()
    data = await read_input(request)
    if not data.is_json:
        # JSON needs no token: a cross-site page cannot send it without a CORS preflight.
        w.csrf.check(request, data.text(CSRF_FIELD, 500), "subscribe", "-")
    if not w.signup_limiter.allow(client_ip(request), now):
        raise WebError(
            429,
            "Too many signups from your network. Please try again in an hour.",
            title="Slow down",
        )
    raw_email = data.text("email", 320, required=True)
    categories = data.items("categories", 40)
    frequency = data.text("frequency", 10, required=True)
    timezone = data.text("timezone", 64)
    source = data.text("source", 1000)
    if data.text(HONEYPOT, 500):
        return _check_inbox(w, data, None)  # a bot: look the same, store and send nothing
    try:
        email = normalise_email(raw_email)
        prefs = parse_preferences(categories, frequency, timezone, w.settings.default_timezone)
    except ValidationError as exc:
        message = f"{LABELS.get(exc.field, exc.field.capitalize())}: {exc.problem}"
        if data.is_json:
            raise WebError(400, message, field=exc.field) from exc
        values = {
            "email": raw_email,
            "categories": [c.strip().lower() for c in categories],
            "frequency": frequency,
            "timezone": timezone,
            "source": source,
        }
        return _form(request, w, values, message, 400)
    signup_request = SignupRequest(
        prefs, _clean(source or f"referrer: {request.headers.get('referer', '')}", 1000)
    )
    signup = await w.db(_signup, w, email, signup_request, now)
    return _check_inbox(w, data, w.email_task(signup, now))


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


_INVALID_CONFIRM = WebError(
    400,
    "This confirmation link is not valid. It may have been cut short by your email "
    "program: copy the whole link from the email, or sign up again.",
    title="Invalid link",
)


def _link(fields: tuple[str, ...]) -> ConfirmLink:
    try:
        return ConfirmLink.read(fields)
    except (ValueError, ValidationError) as exc:  # signed by us, but not a shape we read
        raise _INVALID_CONFIRM from exc


async def confirm_link(request: Request) -> Response:
    w = web(request)
    token = request.path_params["token"]
    try:
        signed = w.tokens.read_signed(Purpose.CONFIRM, token)
    except ExpiredToken as exc:
        return _expired(request, w, token, exc.payload)
    except BadToken as exc:
        raise _INVALID_CONFIRM from exc
    link = _link(signed.fields)
    if request.method != "GET":
        # HEAD (link checkers, mail scanners) must not subscribe anyone.
        return w.pages.message("Confirm your subscription", "Open this link to confirm.")
    # GET activates, as SPEC §6 asks: this click is the double opt-in.
    click = Click(w.clock(), client_address(request), _user_agent(request))
    outcome = await w.db(_confirm, w, link, signed, click)
    if outcome in (Confirmation.CONFIRMED, Confirmation.ALREADY, Confirmation.TOPICS_ADDED):
        preferences = f"/preferences/{w.tokens.make(Purpose.PREFERENCES, link.public_id)}"
        return w.pages.message(
            *_confirmed(outcome, link),
            action_url=preferences,
            action_label="Manage preferences",
        )
    if outcome is Confirmation.STALE:
        raise WebError(
            410,
            "You unsubscribed after this link was sent, so it no longer subscribes you. "
            "To come back, sign up again.",
            title="This link is out of date",
        )
    raise WebError(
        410,
        "There is no subscription for this link any more. You can sign up again.",
        title="Nothing to confirm",
    )


def _confirmed(outcome: Confirmation, link: ConfirmLink) -> tuple[str, str]:
    """The title and words of the page after a link that worked."""
    if outcome is Confirmation.TOPICS_ADDED and link.request is not None:
        topics = names_of(list(link.request.prefs.categories))
        return "Topics added", f"Your digest now includes {topics}."
    title = "You're subscribed" if outcome is Confirmation.CONFIRMED else "Already confirmed"
    return title, (
        "Your subscription is confirmed. Your first digest arrives at the next send time "
        "in your timezone."
    )


def _user_agent(request: Request) -> str | None:
    return _clean(request.headers.get("user-agent", ""), 500) or None


def _confirm(w: Web, link: ConfirmLink, signed: Signed, click: Click) -> Confirmation:
    with w.sessions.begin() as session:
        outcome = confirm(session, link, signed.issued_at, click, w.schedule)
    if outcome is Confirmation.CONFIRMED:
        w.service.metrics.confirmations.inc()
    return outcome


def _expired(request: Request, w: Web, token: str, public_id: str | None) -> Response:
    csrf = w.csrf.session(request)
    response = w.pages.message(
        "This link has expired",
        "Confirmation links work for 7 days. Ask for a fresh one and we'll email it to you.",
        400,
        form={
            "action": "/confirm/resend",
            "fields": {"token": token, CSRF_FIELD: csrf.token("resend", public_id or "")},
            "button": "Email me a fresh link",
        },
    )
    return csrf.attach(request, response)


async def resend(request: Request) -> Response:
    """A fresh confirmation link for an expired one (the signature is still checked)."""
    w = web(request)
    now = w.clock()
    data = await read_input(request, allow_json=False)
    token = data.text("token", 2000, required=True)
    try:
        fields = w.tokens.read_signed(Purpose.CONFIRM, token).fields
    except ExpiredToken as exc:
        if exc.fields is None:
            raise WebError(400, "This confirmation link is not valid.") from exc
        fields = exc.fields
    except BadToken as exc:
        raise WebError(400, "This confirmation link is not valid.") from exc
    link = _link(fields)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "resend", link.public_id)
    if not w.signup_limiter.allow(client_ip(request), now):
        raise WebError(429, "Too many requests from your network. Please try again in an hour.")
    signup = await w.db(_resend, w, link, now)
    return _check_inbox(w, data, w.email_task(signup, now))


def _resend(w: Web, link: ConfirmLink, now: datetime) -> SignupResult:
    with w.sessions.begin() as session:
        return request_fresh_confirmation(
            session, link.public_id, link.request, now, w.policy.signup_limits
        )


ROUTES = [
    Route("/subscribe", subscribe_page, methods=["GET"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/confirm/resend", resend, methods=["POST"]),
    Route("/confirm/{token}", confirm_link, methods=["GET"]),
]
