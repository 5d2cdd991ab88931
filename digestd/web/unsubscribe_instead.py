"""The unsubscribe page, and what it offers beside its one button: the weekly recap
instead, a pause for a while, fewer topics (``POST /unsubscribe/{token}/instead``).

An unsubscribe link is the most exposed link there is (forwarded emails, headers kept by
mail providers), so these offers, like the button, can only ever mean less mail: never
more topics, never the daily, never the preferences page. They act on a POST carrying
the page's CSRF token; the RFC 8058 one-click POST of the link itself stays as it is.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.content.categories import CATEGORIES
from digestd.errors import ValidationError
from digestd.mail.presentation import names_of
from digestd.models import Subscriber, SubscriberStatus
from digestd.readers.lifecycle import change_preferences, pause
from digestd.readers.muting import reader_to_change
from digestd.readers.subscribers import Preferences
from digestd.tokens import Purpose
from digestd.web import pausing
from digestd.web.body import Input, read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.reader_pages import GONE, link_id, load_reader, snapshot

OFFERS = ("weekly", "pause", "topics")
FORM = "unsubscribe-instead"


def render_page(
    request: Request,
    w: Web,
    public_id: str,
    reader: dict[str, Any],
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The one button, and the offers that fit this reader."""
    csrf = w.csrf.session(request)
    receiving = reader["status"] in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED)
    pauses = _longer_pauses(reader, w.clock())
    path = f"/unsubscribe/{request.path_params['token']}"
    context = {
        "reader": reader,
        "action_url": path,
        "instead_url": f"{path}/instead",
        "offer_weekly": receiving and reader["wants_daily"],
        "offer_pause": receiving and bool(pauses),
        "offer_topics": receiving and len(reader["categories"]) > 1,
        "topics": [(slug, CATEGORIES[slug]) for slug in reader["categories"]],
        "pause_choices": pauses,
        "pause_chosen": "2w" if "2w" in pauses else next(iter(pauses), ""),
        "errors": defaultdict(str, errors or {}),
        "csrf": csrf.token(FORM, public_id),
    }
    return csrf.attach(request, w.pages.render("unsubscribe.html", context, status))


def _longer_pauses(reader: dict[str, Any], now: datetime) -> dict[str, str]:
    """The pauses this page offers: for a paused reader, only those ending later than theirs
    (a pause from here never brings digests back sooner; see :func:`_act`)."""
    ends = reader["pause_ends"]
    paused = reader["status"] == SubscriberStatus.PAUSED
    return {
        choice: pausing.LABELS[choice]
        for choice in pausing.WEEKS
        if not paused or (ends and ends < pausing.pause_end(choice, "", reader["zone"], now))
    }


async def instead(request: Request) -> Response:
    w = web(request)
    public_id = link_id(w, Purpose.UNSUBSCRIBE, request.path_params["token"], allow_expired=True)
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), FORM, public_id)
    offer = data.text("offer", 10, required=True)
    try:
        if offer not in OFFERS:
            raise ValidationError("offer", "choose the weekly recap, a pause or fewer topics")
        done = await w.db(_act, w, public_id, offer, data)
    except (ValidationError, WebError) as exc:
        reader = await w.db(load_reader, w, public_id)
        if reader is None:
            raise GONE from exc
        problem = exc.problem if isinstance(exc, ValidationError) else exc.message
        problem = problem[:1].upper() + problem[1:].rstrip(".") + "."
        return render_page(request, w, public_id, reader, {exc.field or "offer": problem}, 400)
    if done is None:
        raise GONE
    title, message = done
    return w.pages.message(title, message)


def _act(w: Web, public_id: str, offer: str, data: Input) -> tuple[str, str] | None:
    now = w.clock()
    with w.sessions.begin() as session:
        reader = reader_to_change(session, public_id)
        if reader is None:
            return None
        if reader.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
            return "Nothing to change", "This address gets no digests at the moment."
        before = ""
        if offer == "weekly":
            _keep(reader, reader.category_slugs, now, w, weekly_only=True)
            title = "The weekly recap only"
        elif offer == "pause":
            choice = data.text("pause_for", 10)
            if choice not in pausing.WEEKS:
                raise ValidationError("pause_for", "choose 1, 2 or 4 weeks")
            until = pausing.pause_end(choice, "", reader.timezone, now)
            # Only ever longer: a pause already running to a later date (or with no end)
            # stays as it is, or this link could bring digests back sooner.
            current = reader.paused_until
            if reader.status == SubscriberStatus.ACTIVE or (current and current < until):
                pause(reader, until)
            title = "Your digests are paused"
        else:
            kept = _kept(reader, data.items("keep", 40))
            if kept == reader.category_slugs:
                title = "Nothing changed"
                before = "You kept every topic ticked, so your topics stay as they are. "
            else:
                _keep(reader, kept, now, w)
                title = "Fewer topics"
        session.flush()
        return title, before + _said(snapshot(reader, w.schedule))


def _kept(reader: Subscriber, keep: list[str]) -> list[str]:
    followed = reader.category_slugs
    if not keep:
        raise ValidationError("keep", "keep at least one topic, or unsubscribe")
    if any(slug not in followed for slug in keep):
        raise ValidationError("keep", "choose among the topics you follow")  # less mail only
    return [slug for slug in followed if slug in keep]


def _keep(
    reader: Subscriber, categories: list[str], now: datetime, w: Web, *, weekly_only: bool = False
) -> None:
    prefs = Preferences(
        tuple(categories),
        reader.wants_daily and not weekly_only,
        reader.wants_weekly or weekly_only,
        reader.timezone,
    )
    change_preferences(reader, prefs, now, w.schedule)


def _said(reader: dict[str, Any]) -> str:
    """What they get now, and when the next one comes."""
    what = {
        "daily": "the daily digest",
        "weekly": "the weekly recap",
        "both": "the daily digest and the weekly recap",
    }[reader["frequency"]]
    said = f"You'll get {what}, covering {names_of(reader['categories'])}."
    if reader["paused_until"]:
        said = f"No digests until {reader['paused_until']}; then {said[0].lower()}{said[1:]}"
    if reader["upcoming"]:
        first = reader["upcoming"][0]
        said += f" The next one: the {first['name']}, {first['when']}."
    return said


ROUTES = [Route("/unsubscribe/{token}/instead", instead, methods=["POST"])]
