"""Following the link of a signup email: ``/confirm/{token}``, and a fresh link for an
expired one (SPEC §1, §6).

- A "please confirm" link activates on GET (SPEC §6: the click is the double opt-in; HEAD
  changes nothing). The page, and a welcome email sent once, say exactly when the first
  digest comes and link the latest public edition of the reader's topics.
- An "add these topics" link (sent to a reader who signed up again asking for more) shows
  on GET what it would add, with a button; the POST, with the page's CSRF token, adds
  them. Mail scanners open links: a GET never changes a reader's topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.errors import ValidationError
from digestd.mail.presentation import names_of
from digestd.models import EditionKind
from digestd.readers.lifecycle import Click, Confirmation, confirm, topics_offered, welcome
from digestd.readers.signups import (
    ConfirmLink,
    Mode,
    SignupResult,
    request_fresh_confirmation,
)
from digestd.readers.subscribers import by_public_id
from digestd.readers.upcoming import Upcoming, upcoming
from digestd.tokens import BadToken, ExpiredToken, Purpose, Signed
from digestd.web import shelves
from digestd.web.body import read_input
from digestd.web.clients import client_address
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.shelves import Shelved
from digestd.web.signup import check_inbox, clean

_INVALID = WebError(
    400,
    "This confirmation link is not valid. It may have been cut short by your email "
    "program: copy the whole link from the email, or sign up again.",
    title="Invalid link",
)
_STALE = WebError(
    410,
    "You unsubscribed after this link was sent, so it no longer subscribes you. "
    "To come back, sign up again.",
    title="This link is out of date",
)
_GONE = WebError(
    410,
    "There is no subscription for this link any more. You can sign up again.",
    title="Nothing to confirm",
)


def _link(fields: tuple[str, ...]) -> ConfirmLink:
    try:
        return ConfirmLink.read(fields)
    except (ValueError, ValidationError) as exc:  # signed by us, but not a shape we read
        raise _INVALID from exc


def _signed(w: Web, token: str) -> Signed:
    try:
        return w.tokens.read_signed(Purpose.CONFIRM, token)
    except ExpiredToken as exc:
        raise WebError(
            400,
            "This link has expired. Open it from the email again: the page offers a fresh one.",
            title="This link has expired",
        ) from exc
    except BadToken as exc:
        raise _INVALID from exc


@dataclass
class Confirmed:
    """What the page after a followed link shows (and a welcome email says)."""

    outcome: Confirmation
    topics: list[str] = field(default_factory=list)  # TOPICS_ADDED: the ones added
    covered: list[str] = field(default_factory=list)  # every topic the reader now gets
    dropped: list[str] = field(default_factory=list)  # CONFIRMED: had before, not any more
    upcoming: list[Upcoming] = field(default_factory=list)
    editions: list[Shelved] = field(default_factory=list)
    welcome: SignupResult | None = None


async def confirm_link(request: Request) -> Response:
    w = web(request)
    token = request.path_params["token"]
    try:
        signed = w.tokens.read_signed(Purpose.CONFIRM, token)
    except ExpiredToken as exc:
        return _expired(request, w, token, exc.payload)
    except BadToken as exc:
        raise _INVALID from exc
    link = _link(signed.fields)
    if request.method != "GET":
        # HEAD (link checkers, mail scanners) must not subscribe anyone.
        return w.pages.message("Confirm your subscription", "Open this link to confirm.")
    if link.mode is Mode.ADD_TOPICS:
        return await _offer(request, w, link)
    click = Click(w.clock(), client_address(request), _user_agent(request))
    done = await w.db(_confirm, w, link, signed, click)
    page = _page(w, link, done, click.at)
    if done.welcome is not None:
        page.background = w.email_task(done.welcome, click.at, done.editions)
    return page


async def add_topics(request: Request) -> Response:
    """The button of an "add these topics" page."""
    w = web(request)
    token = request.path_params["token"]
    signed = _signed(w, token)  # an expired one: its GET page offers a fresh link
    link = _link(signed.fields)
    data = await read_input(request, allow_json=False)
    if link.mode is not Mode.ADD_TOPICS:
        raise WebError(400, "This link confirms a subscription when opened; open it.")
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "add-topics", link.public_id)
    click = Click(w.clock(), client_address(request), _user_agent(request))
    done = await w.db(_confirm, w, link, signed, click)
    return _page(w, link, done, click.at)


def _page(w: Web, link: ConfirmLink, done: Confirmed, now: datetime) -> Response:
    """``now``: the click, whose local date in the reader's zone makes the first digest's
    day "today" or "tomorrow", as the welcome email sent for it says."""
    if done.outcome is Confirmation.STALE:
        raise _STALE
    if done.outcome is Confirmation.GONE:
        raise _GONE
    titles = {
        Confirmation.CONFIRMED: "You're subscribed",
        Confirmation.ALREADY: "Already confirmed",
        Confirmation.TOPICS_ADDED: "Topics added",
    }
    added = done.outcome is Confirmation.TOPICS_ADDED and done.topics
    preferences = f"/preferences/{w.tokens.make(Purpose.PREFERENCES, link.public_id)}"
    context = {
        "title": titles[done.outcome],
        "added": names_of(done.topics) if added else "",
        "topics": names_of(done.covered) if done.covered else "",
        # A reader coming back with other topics sees the ones they no longer get.
        "dropped": names_of(done.dropped) if done.dropped else "",
        "dropped_one": len(done.dropped) == 1,
        "first": _coming(done.upcoming[0], now) if done.upcoming else None,
        "then": [_coming(u, now) for u in done.upcoming[1:]],
        "editions": done.editions,
        "preferences_url": preferences,
    }
    return w.pages.render("confirmed.html", context)


def _coming(edition: Upcoming, now: datetime) -> dict[str, str]:
    return {"name": edition.name, "when": edition.when_from(now)}


def _user_agent(request: Request) -> str | None:
    return clean(request.headers.get("user-agent", ""), 500) or None


def _confirm(w: Web, link: ConfirmLink, signed: Signed, click: Click) -> Confirmed:
    with w.sessions.begin() as session:
        before = by_public_id(session, link.public_id, lock=True)
        had = before.category_slugs if before else []
        outcome = confirm(session, link, signed.issued_at, click, w.schedule)
        done = Confirmed(outcome)
        reader = by_public_id(session, link.public_id)
        if reader is None or outcome in (Confirmation.STALE, Confirmation.GONE):
            return done
        session.flush()
        done.covered = reader.category_slugs
        done.topics = [c for c in done.covered if c not in had]
        if outcome is Confirmation.CONFIRMED:
            done.dropped = [c for c in had if c not in done.covered]
        done.upcoming = upcoming(reader, w.schedule)
        kinds = [EditionKind.DAILY, EditionKind.WEEKLY]
        if not reader.wants_daily:
            kinds.reverse()
        done.editions = shelves.latest_for_reader(session, reader.category_slugs, kinds)
        if outcome is Confirmation.CONFIRMED:
            done.welcome = welcome(session, reader, click.at, w.policy.signup_limits, w.schedule)
    if outcome is Confirmation.CONFIRMED:
        w.service.metrics.confirmations.inc()
    return done


async def _offer(request: Request, w: Web, link: ConfirmLink) -> Response:
    outcome, new = await w.db(_look, w, link)
    if outcome is not Confirmation.TOPICS_ADDED:
        # nothing to add, or nobody to add it to
        return _page(w, link, Confirmed(outcome), w.clock())
    csrf = w.csrf.session(request)
    topics = names_of(new)
    page = w.pages.message(
        f"Add {topics} to your digest?",
        f"You asked for {topics} when you signed up again. Your digest keeps its other "
        "topics; add these to them with the button.",
        form={
            "action": request.url.path,
            "fields": {CSRF_FIELD: csrf.token("add-topics", link.public_id)},
            "button": f"Add {topics}",
        },
    )
    return csrf.attach(request, page)


def _look(w: Web, link: ConfirmLink) -> tuple[Confirmation, list[str]]:
    with w.sessions() as session:
        return topics_offered(by_public_id(session, link.public_id), link)


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
    w.count_signup_request(request, now)
    signup = await w.db(_resend, w, link, now)
    return check_inbox(w, data, w.email_task(signup, now))


def _resend(w: Web, link: ConfirmLink, now: datetime) -> SignupResult:
    with w.sessions.begin() as session:
        return request_fresh_confirmation(
            session, link.public_id, link.request, now, w.policy.signup_limits
        )


ROUTES = [
    Route("/confirm/resend", resend, methods=["POST"]),
    Route("/confirm/{token}", confirm_link, methods=["GET"]),
    Route("/confirm/{token}", add_topics, methods=["POST"]),
]
