"""The operator's page ``/admin``: the queue right now, charts of the last 30 days, and the
bounce policy (which refusals suppress a reader).

Sign-in is the admin token typed into a form once (the session: :mod:`digestd.web.admin_auth`);
both forms are CSRF-protected. The pages that act are in ``admin_*`` modules, their routes
gathered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from digestd.ops.activity import Activity, Snapshot, daily_activity, snapshot
from digestd.ops.engagement import ClickDays, click_days
from digestd.readers import bounce_policy
from digestd.web import (
    admin_articles,
    admin_editions,
    admin_feeds,
    admin_import,
    admin_readers,
    admin_sending,
)
from digestd.web.admin_auth import (
    COOKIE,
    SESSION_AGE,
    AdminSessions,
    audit,
    enabled,
    locked_out,
    sign_out,
    token_matches,
    wrong_token,
)
from digestd.web.admin_pages import REFRESH_SECONDS, login_page, operator, page, safe_next
from digestd.web.body import read_input
from digestd.web.charts import Series, bar_chart, day_label, number
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

DAYS = 30


@operator
async def admin_page(request: Request) -> Response:
    w = web(request)
    now = w.clock()
    current, activity, clicks = await w.db(_dashboard_data, w, now)
    context = {
        "title": "Operations",
        "bounce_policy": bounce_policy.rows(),
        "refresh": REFRESH_SECONDS if _sending(current, now) else 0,
        **_dashboard(current, activity, clicks, now),
    }
    return page(request, "admin.html", "overview", context)


async def login(request: Request) -> Response:
    w = web(request)
    expected = enabled(w)
    if wait := locked_out(request):
        raise WebError(
            429, "Too many sign-in attempts. Wait a few minutes and try again.", retry_after=wait
        )
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "admin-login", "-")
    given = data.text("token", 500)
    if not given or not token_matches(given, expected):
        wrong_token(request, "page.sign_in")
        return login_page(request, w, "That is not the admin token.", status=401)
    audit(request, "page.sign_in", "ok")
    response = RedirectResponse(safe_next(data.text("next", 2000)), status_code=303)
    response.set_cookie(
        COOKIE,
        AdminSessions(w.settings, w.tokens).issue(),
        max_age=int(SESSION_AGE.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/admin",
    )
    return response


async def logout(request: Request) -> Response:
    w = web(request)
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "admin-logout", "-")
    await sign_out(request)
    audit(request, "page.sign_out", "ok")
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(
        COOKIE,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _sending(current: Snapshot, now: datetime) -> bool:
    """An edition is going out (rows claimed, or due and waiting): the tiles follow it."""
    oldest = current.oldest_queued_due_at
    return bool(current.queue.get("sending")) or (oldest is not None and oldest <= now)


def _dashboard_data(w: Web, now: datetime) -> tuple[Snapshot, Activity, ClickDays]:
    with w.sessions() as session:
        return snapshot(session), daily_activity(session, now, DAYS), click_days(session, now, DAYS)


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    note: str = ""
    tone: str = ""  # "", "warn" or "bad"


def _age(since: datetime, now: datetime) -> str:
    minutes = max(0, int((now - since).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes // (24 * 60)} days"


def _dashboard(
    current: Snapshot, activity: Activity, clicks: ClickDays, now: datetime
) -> dict[str, Any]:
    q = current.queue
    oldest = current.oldest_queued_due_at
    waiting = "none waiting"
    if oldest is not None:
        waiting = f"oldest due {_age(oldest, now)} ago" if oldest <= now else "next due later"
    stuck = oldest is not None and now - oldest > timedelta(hours=1)
    failed = sum(e.get("failed") for e in current.last_editions)
    queue = [
        Tile("Queued", number(q.get("queued", 0)), waiting, "warn" if stuck else ""),
        Tile("Sending", number(q.get("sending", 0)), "claimed by a worker"),
        Tile("Failed", number(failed), "in the latest editions", "bad" if failed else ""),
        Tile("Sent", number(sum(activity.sent)), f"last {DAYS} days"),
        Tile("Skipped", number(sum(activity.skipped)), "nothing new, too late, or a recap instead"),
    ]
    s = current.subscribers
    readers = [
        Tile("Active", number(s.get("active", 0))),
        Tile("Pending", number(s.get("pending", 0)), "not confirmed yet"),
        Tile("Paused", number(s.get("paused", 0))),
        Tile("Unsubscribed", number(s.get("unsubscribed", 0))),
        Tile("Bounced", number(s.get("bounced", 0) + s.get("complained", 0)), "or complained"),
    ]
    editions = [
        {
            "id": e.id,
            "kind": e.kind.capitalize(),
            "period": e.period,
            "parts": [
                (label, number(e.get(*keys)))
                for label, keys in (
                    ("sent", ("sent",)),
                    ("failed", ("failed",)),
                    ("skipped", ("skipped",)),
                    ("waiting", ("queued", "sending")),
                )
            ],
        }
        for e in current.last_editions
    ]
    charts = [
        Series("sent", "Sent", "emails sent", activity.days, activity.sent),
        Series("skipped", "Skipped", "editions skipped", activity.days, activity.skipped),
        Series("unsub", "Unsubscribes", "unsubscribes", activity.days, activity.unsubscribes),
        Series("bounce", "Suppressed", "addresses suppressed", activity.days, activity.bounces),
        Series("clicks", "Clicks on stories", "clicks", clicks.days, clicks.clicks),
        Series("clickers", "Readers who clicked", "emails clicked", clicks.days, clicks.clickers),
    ]
    return {
        "queue": queue,
        "readers": readers,
        "editions": editions,
        "charts": [{"series": c, "svg": bar_chart(c), "total": number(c.total)} for c in charts],
        "first_day": day_label(activity.days[0]),
        "last_day": day_label(activity.days[-1]),
        "days": activity.days,
    }


ROUTES = [
    Route("/admin", admin_page, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", logout, methods=["POST"]),
    *admin_readers.ROUTES,
    *admin_import.ROUTES,
    *admin_articles.ROUTES,
    *admin_editions.ROUTES,
    *admin_feeds.ROUTES,
    *admin_sending.ROUTES,
]
