"""``/admin/subscribers``: search the list, one reader's page (status, preferences, consent,
their last editions and bounces) and what an operator may do to a subscription:
unsubscribe, email a confirmation link (to come back after an unsubscribe, or again for a
pending signup: the reader's status changes only when *they* follow it), change
preferences, erase (typing the address to confirm). The CSV export is the CLI's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from digestd.content.categories import ALL_NAME, CATEGORIES
from digestd.errors import ValidationError
from digestd.models import Subscriber, SubscriberStatus
from digestd.ops.subscriber_views import Search, bounces, received, search
from digestd.readers import sunset
from digestd.readers.lifecycle import change_preferences, erase_subscriber, unsubscribe
from digestd.readers.signups import Held, SignupRequest, SignupResult, request_signup
from digestd.readers.subscribers import frequency_name, locked, parse_preferences, parse_timezone
from digestd.web import params
from digestd.web.admin_auth import audit
from digestd.web.admin_pages import action_form, done, operator, page, refusal
from digestd.web.api_lists import subscribers_csv
from digestd.web.body import Input
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.zones import zone_names

PAGE = 50
STATUSES = [str(s) for s in SubscriberStatus]
NOTICES = {
    "unsubscribed": "Unsubscribed: no more digests go to this reader. Coming back takes a "
    "confirmation from their own inbox.",
    "emailed": "A confirmation email is on its way. The reader's status changes only when "
    "they follow its link.",
    str(Held.MAILBOX): "No email sent: this inbox has had its share of signup emails for now "
    "(a few a day, minutes apart). Try again later.",
    str(Held.HOURLY_CAP): "No email sent: the hourly cap on signup emails is reached. Try "
    "again later.",
    str(Held.NOBODY): "No email sent: the address is suppressed (it bounced or complained).",
    "saved": "Preferences saved.",
    "erased": "The reader is erased. Only a one-way hash of the address is kept, so no "
    "import or test send mails it again; they can come back only by signing up again "
    "themselves and confirming from their inbox.",
}
# Which actions each status allows (the page shows only those).
ALLOWED = {
    "unsubscribe": {SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED, SubscriberStatus.PENDING},
    "resubscribe": {SubscriberStatus.UNSUBSCRIBED},
    "confirm": {SubscriberStatus.PENDING},
}
ACTIONS = ("unsubscribe", "resubscribe", "confirm", "save", "erase")
# The forms' fields by the id of the control an error marks, as the page labels them.
FIELDS = {
    "confirm_email": "Address",
    "categories": "Categories",
    "frequency": "Frequency",
    "timezone": "Time zone",
}


@operator
async def list_page(request: Request) -> Response:
    w = web(request)
    params.only(request, "q", "status", "category", "zone", "cursor", "done")
    zone = params.text(request, "zone", 64) or None
    if zone:
        try:
            zone = parse_timezone(zone, "UTC", "zone")
        except ValidationError as exc:
            raise WebError(400, str(exc), field="zone") from exc
    wanted = Search(
        (params.text(request, "q") or "").strip().lower(),
        params.choice(request, "status", STATUSES),
        params.choice(request, "category", list(CATEGORIES)),
        zone,
    )
    cursors = params.Cursors(w.tokens)
    after = cursors.load_id(request, "admin-subscribers")
    rows = await w.db(_search, w, wanted, after)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_query = {
        "q": wanted.fragment,
        "status": wanted.status or "",
        "category": wanted.category or "",
        "zone": wanted.zone or "",
        "cursor": cursors.dump("admin-subscribers", [rows[-1]["id"]]) if more else "",
    }
    context = {
        "title": "Subscribers",
        "rows": rows,
        "wanted": wanted,
        "statuses": STATUSES,
        "categories": CATEGORIES,
        "next_query": next_query if more else None,
        "first_page": after is None,
    }
    return page(request, "admin_subscribers.html", "subscribers", context, notices=NOTICES)


def _search(w: Web, wanted: Search, before: int | None) -> list[dict[str, Any]]:
    with w.sessions() as session:
        return [_summary(s) for s in search(session, wanted, PAGE + 1, before)]


def _summary(s: Subscriber) -> dict[str, Any]:
    return {
        "id": s.id,
        "email": s.email,
        "status": s.status,
        "categories": s.category_slugs,
        "frequency": frequency_name(s),
        "timezone": s.timezone,
        "created_at": s.created_at,
    }


async def export(request: Request) -> StreamingResponse:
    """The same CSV as ``digestd subscribers export``, streamed as it is read."""
    params.only(request)
    audit(request, "page.subscribers.export", "ok")
    return subscribers_csv(web(request))


# --- one reader ------------------------------------------------------------------------------


def _reader_id(request: Request) -> int:
    return int(request.path_params["subscriber"])


@operator
async def reader_page(request: Request) -> Response:
    params.only(request, "done")
    return await _reader_response(request, _reader_id(request))


async def _reader_response(
    request: Request,
    subscriber_id: int,
    *,
    error: ValidationError | None = None,
    status: int = 200,
) -> Response:
    w = web(request)
    found = await w.db(_record, w, subscriber_id)
    if found is None:
        raise WebError(404, "There is no such subscriber (erased, or never there).")
    context = {
        "title": found["reader"]["email"],
        "categories": CATEGORIES,
        "all_name": ALL_NAME,
        "timezones": _zones(found["reader"]["timezone"]),
        "allowed": {
            action for action, statuses in ALLOWED.items() if found["reader"]["status"] in statuses
        },
        **found,
    }
    if error:
        context["error"], context["error_field"] = refusal(FIELDS, error.field, str(error))
    return page(
        request, "admin_reader.html", "subscribers", context, notices=NOTICES, status=status
    )


def _zones(current: str) -> list[str]:
    """The zones to choose from, the reader's own first if it is an old alias not listed
    (saving the form must not change it behind the operator's back)."""
    names = list(zone_names())
    return names if current in names else [current, *names]


def _record(w: Web, subscriber_id: int) -> dict[str, Any] | None:
    with w.sessions() as session:
        s = session.get(Subscriber, subscriber_id)
        if s is None:
            return None
        reader = {
            **_summary(s),
            "wants_daily": s.wants_daily,
            "wants_weekly": s.wants_weekly,
            "next_daily_at": s.next_daily_at,
            "next_weekly_at": s.next_weekly_at,
            "paused_until": s.paused_until,
            "confirmed_at": s.confirmed_at,
            "unsubscribed_at": s.unsubscribed_at,
            "soft_bounces": s.soft_bounces,
        }
        consent = {
            "at": s.consent_at,
            "source": s.consent_source,
            "ip": s.consent_ip,
            "user_agent": s.consent_user_agent,
            "wording": s.consent_wording,
        }
        return {
            "reader": reader,
            "consent": consent,
            "received": received(session, s.id),
            "bounces": bounces(session, s.id),
            "engagement": _engagement(session, s, w.settings.track_clicks),
        }


def _engagement(session: Session, s: Subscriber, tracking: str) -> dict[str, Any]:
    """Their clicks and their sunset (reader mode): what the reader's page shows of them."""
    return {
        "tracking": tracking,
        "last_click_at": s.last_click_at,
        "learns": s.learns,
        "stage": s.sunset_stage,
        "since": s.sunset_at,
        "steps": sunset.steps(session, s.id),
    }


@operator
async def reader_action(request: Request) -> Response:
    w = web(request)
    subscriber_id = _reader_id(request)
    data = await action_form(request, "admin-reader", str(subscriber_id))
    action = data.text("action", 20, required=True)
    if action not in ACTIONS:
        raise WebError(400, f"action: unknown action {action[:20]!r}", field="action")
    try:
        word, signup = await w.db(_act, w, subscriber_id, action, data)
    except ValidationError as exc:
        audit(request, f"page.subscriber.{action}", "refused", subscriber=subscriber_id)
        return await _reader_response(request, subscriber_id, error=exc, status=400)
    audit(request, f"page.subscriber.{action}", word, subscriber=subscriber_id)
    if action == "erase":
        return done("/admin/subscribers", "erased")
    response = done(f"/admin/subscribers/{subscriber_id}", word)
    if signup is not None and signup.notice is not None:
        # Sent after the answer, as a signup's is (not counted as a signup: nobody signed up).
        response.background = BackgroundTask(w.send_signup_email, signup)
    return response


def _act(w: Web, subscriber_id: int, action: str, data: Input) -> tuple[str, SignupResult | None]:
    """Do ``action`` to the reader; the word the page will say, and the email to send."""
    now = w.clock()
    with w.sessions.begin() as session:
        s = locked(session, Subscriber.id == subscriber_id)
        if s is None:
            raise WebError(404, "There is no such subscriber (erased, or never there).")
        if action in ALLOWED and s.status not in ALLOWED[action]:
            raise WebError(409, f"The reader is {s.status}: there is nothing to {action}.")
        if action == "unsubscribe":
            if unsubscribe(s, now, via="admin"):
                w.service.metrics.unsubscribes.labels("admin").inc()
            return "unsubscribed", None
        if action in ("resubscribe", "confirm"):
            source = "admin: confirmation link sent by an operator"
            signup = request_signup(
                session, s.email, SignupRequest.of(s, source), now, w.policy.signup_limits
            )
            return ("emailed" if signup.notice else str(signup.held)), signup
        if action == "save":
            prefs = parse_preferences(
                data.items("categories", 40),
                data.text("frequency", 10, required=True),
                data.text("timezone", 64),
                s.timezone,
            )
            change_preferences(s, prefs, now, w.schedule)
            return "saved", None
        typed = data.text("confirm_email", 320).lower()
        if typed != s.email:
            raise ValidationError(
                "confirm_email", f"type the reader's address ({s.email}) to erase them"
            )
        erase_subscriber(session, s, now)
        return "erased", None


ROUTES = [
    Route("/admin/subscribers", list_page, methods=["GET"]),
    Route("/admin/subscribers/export", operator(export), methods=["GET"]),
    Route("/admin/subscribers/{subscriber:id}", reader_page, methods=["GET"]),
    Route("/admin/subscribers/{subscriber:id}", reader_action, methods=["POST"]),
]
