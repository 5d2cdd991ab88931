"""``/admin/feeds``: every feed with its health (last success, failures in a row, what its
last run stored and rejected), adding one after a test fetch, removing one, polling one
now. Adding and removing are the CLI's (:mod:`digestd.content.feeds`): a URL that is not
a feed is refused, with the reason shown in the form."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.content.categories import CATEGORIES
from digestd.content.feed_adding import add_feed
from digestd.content.feed_polling import INTERVAL
from digestd.content.feeds import remove_feed
from digestd.errors import InputError
from digestd.ops import feed_admin
from digestd.web import params
from digestd.web.admin_auth import audit
from digestd.web.admin_pages import action_form, done, operator, page, refusal
from digestd.web.context import Web, web
from digestd.web.errors import WebError

NOTICES = {
    "added": "Added: the test fetch found a feed (items in it now: {n}, stored as articles: "
    "{stored}). It is polled from now on.",
    "added-inside": "Added: the test fetch found a feed (items in it now: {n}, stored as "
    "articles: {stored}) on a server inside this network, so it may redirect to other "
    "addresses inside. It is polled from now on.",
    "removed": "Removed: the feed is no longer polled. The articles it brought stay.",
    "polled": "Polled. Articles stored or updated: {n}.",
    "poll-failed": "The poll failed; the feed's row says why. It is retried with a growing pause.",
    "busy": "Not polled: another poll of this feed had just started.",
}
# The form's fields by the id of their input, as its labels name them.
FIELDS = {"feed-url": "Feed URL", "feed-category": "Category"}
# The prefixes of the CLI's messages (digestd.content.feeds) and the field each is about.
_PREFIXES = {"URL: ": "feed-url", "--category: ": "feed-category"}


@operator
async def feeds_page(request: Request) -> Response:
    params.only(request, "done", "n", "stored")
    return await _page(request)


async def _page(
    request: Request,
    *,
    error: str | None = None,
    field: str | None = None,
    typed: dict[str, str] | None = None,
) -> Response:
    w = web(request)
    feeds = await w.db(_health, w)
    context: dict[str, Any] = {
        "title": "Feeds",
        "feeds": feeds,
        "categories": CATEGORIES,
        "interval_minutes": int(INTERVAL.total_seconds() // 60),
        "typed": typed or {"url": "", "category": ""},
    }
    if error:
        context["error"], context["error_field"] = refusal(FIELDS, field, error)
    return page(
        request, "admin_feeds.html", "feeds", context, notices=NOTICES, status=400 if error else 200
    )


def _health(w: Web) -> list[feed_admin.FeedHealth]:
    with w.sessions() as session:
        return feed_admin.health(session)


@operator
async def add(request: Request) -> Response:
    w = web(request)
    data = await action_form(request, "admin-feeds", "-")
    url = data.text("url", 2000, required=True)
    category = data.text("category", 40, required=True)
    typed = {"url": url, "category": category}
    if category not in CATEGORIES:
        error = f"unknown category {category!r}"
        return await _page(request, error=error, field="feed-category", typed=typed)
    try:
        added = await w.db(add_feed, w.sessions, url, category, w.clock())
    except InputError as exc:
        audit(request, "page.feed.add", "refused")
        return await _page(request, **_field_of(str(exc)), typed=typed)
    audit(request, "page.feed.add", "ok", feed=added.feed.id)
    notice = "added-inside" if added.feed.server_inside else "added"
    return done("/admin/feeds", notice, n=str(added.items), stored=str(added.stored))


@operator
async def act(request: Request) -> Response:
    w = web(request)
    feed_id = int(request.path_params["feed"])
    data = await action_form(request, "admin-feed", str(feed_id))
    action = data.text("action", 20, required=True)
    if action == "remove":
        if not await w.db(_remove, w, feed_id):
            raise WebError(404, "There is no such feed (removed already?).")
        audit(request, "page.feed.remove", "ok", feed=feed_id)
        return done("/admin/feeds", "removed")
    if action == "poll":
        report = await w.db(feed_admin.poll_now, w.sessions, feed_id, w.clock())
        if report is None:
            raise WebError(404, "There is no such feed (removed already?).")
        outcome = "poll-failed" if report.failed else ("polled" if report.polled else "busy")
        audit(request, "page.feed.poll", outcome, feed=feed_id, articles=report.articles)
        return done("/admin/feeds", outcome, n=str(report.articles))
    raise WebError(400, f"action: unknown action {action[:20]!r}", field="action")


def _field_of(message: str) -> dict[str, str | None]:
    """The CLI's message ("URL: …") as the page's error and the field it is about."""
    for prefix, field in _PREFIXES.items():
        if message.startswith(prefix):
            return {"error": message.removeprefix(prefix), "field": field}
    return {"error": message, "field": None}


def _remove(w: Web, feed_id: int) -> bool:
    with w.sessions.begin() as session:
        return remove_feed(session, feed_id) is not None


ROUTES = [
    Route("/admin/feeds", feeds_page, methods=["GET"]),
    Route("/admin/feeds", add, methods=["POST"]),
    Route("/admin/feeds/{feed:id}", act, methods=["POST"]),
]
