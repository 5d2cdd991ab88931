"""``/admin/articles``: the recent articles (newest first, a keyset page at a time), found
by words of the title, category, kind or source, each with its standing; editors pin one
(it leads every edition of its categories until a set time) or hold one (it goes in no
edition). The same actions as ``/api/articles/{id}/pin|hold``
(:mod:`digestd.web.api_articles`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.content.articles import KINDS
from digestd.content.categories import CATEGORIES
from digestd.errors import ValidationError
from digestd.models import Article, ArticleCategory
from digestd.web import params
from digestd.web.admin_auth import audit
from digestd.web.admin_pages import action_form, done, operator, page, refusal
from digestd.web.api_articles import apply
from digestd.web.context import Web, web
from digestd.web.errors import WebError

PAGE = 50
STATES = ("pinned", "held")
ACTIONS = {"pin": "pinned", "unpin": "unpinned", "hold": "held", "release": "released"}
NOTICES = {
    "pinned": "Pinned: it leads every edition of its categories planned until then.",
    "unpinned": "Unpinned: it is ranked like any other article again.",
    "held": "Held: it goes in no edition planned from now on.",
    "released": "Released: it may go in editions again.",
}
UNTIL = "Pin until (UTC)"  # the label of an article's ``until`` field


@dataclass(frozen=True)
class Wanted:
    words: str = ""
    category: str | None = None
    kind: str | None = None
    source: str = ""
    state: str | None = None  # pinned | held


@dataclass(frozen=True)
class Refused:
    """An action the list refused: on which article, why, and what was typed as ``until``."""

    article: str
    field: str | None
    message: str
    until: str


@operator
async def list_page(request: Request) -> Response:
    params.only(request, "q", "category", "kind", "source", "state", "cursor", "done")
    return await _listing(request)


async def _listing(request: Request, refused: Refused | None = None) -> Response:
    w = web(request)
    wanted = Wanted(
        (params.text(request, "q", 200) or "").strip(),
        params.choice(request, "category", list(CATEGORIES)),
        params.choice(request, "kind", list(KINDS)),
        (params.text(request, "source", 200) or "").strip(),
        params.choice(request, "state", list(STATES)),
    )
    cursors = params.Cursors(w.tokens)
    key = cursors.load_timed(request, "admin-articles")
    now = w.clock()
    rows = await w.db(_page, w, wanted, key, now)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    query = {"q": wanted.words, "category": wanted.category or "", "kind": wanted.kind or ""}
    query |= {"source": wanted.source, "state": wanted.state or ""}
    if more:
        last = rows[-1]
        query["cursor"] = cursors.dump(
            "admin-articles", [last["published_at"].isoformat(), last["id"]]
        )
    context = {
        "title": "Articles",
        "rows": rows,
        "wanted": wanted,
        "categories": CATEGORIES,
        "kinds": KINDS,
        "states": STATES,
        "next_query": query if more else None,
        "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "default_until": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        "typed_until": None,
    }
    if refused is not None:
        context["error"], field = refusal({"until": UNTIL}, refused.field, refused.message)
        if field and any(r["id"] == refused.article for r in rows):  # on this page of the list
            context["error_field"] = _until_id(refused.article)
        context["typed_until"] = refused.until
    status = 400 if refused is not None else 200
    return page(request, "admin_articles.html", "articles", context, notices=NOTICES, status=status)


def _page(
    w: Web, wanted: Wanted, before: tuple[datetime, str] | None, now: datetime
) -> list[dict[str, Any]]:
    with w.sessions() as session:
        return [_row(a, now) for a in _articles(session, wanted, before)]


def _articles(
    session: Session, wanted: Wanted, before: tuple[datetime, str] | None
) -> list[Article]:
    statement = (
        select(Article)
        .options(selectinload(Article.categories))  # one query for the page, not one a row
        .order_by(Article.published_at.desc(), Article.id.desc())
        .limit(PAGE + 1)
    )
    if wanted.words:
        statement = statement.where(Article.title.icontains(wanted.words, autoescape=True))
    if wanted.source:
        statement = statement.where(Article.source.icontains(wanted.source, autoescape=True))
    if wanted.kind:
        statement = statement.where(Article.kind == wanted.kind)
    if wanted.state == "held":
        statement = statement.where(Article.held.is_(True))
    elif wanted.state == "pinned":
        statement = statement.where(Article.pinned_until.is_not(None))
    if wanted.category:
        statement = statement.where(
            Article.id.in_(
                select(ArticleCategory.article_id).where(
                    ArticleCategory.category == wanted.category
                )
            )
        )
    if before is not None:
        at, article_id = before
        statement = statement.where(
            or_(
                Article.published_at < at, and_(Article.published_at == at, Article.id < article_id)
            )
        )
    return list(session.scalars(statement))


def _row(a: Article, now: datetime) -> dict[str, Any]:
    return {
        "id": a.id,
        "title": a.title,
        "url": a.url,
        "source": a.source,
        "kind": a.kind,
        "categories": _in_site_order({c.category for c in a.categories}),
        "score": a.score,
        "published_at": a.published_at,
        "pinned_until": a.pinned_until if a.pinned_until and a.pinned_until > now else None,
        "pin_over": a.pinned_until is not None and a.pinned_until <= now,
        "held": a.held,
        "until_id": _until_id(a.id),
    }


def _until_id(article_id: str) -> str:
    """An HTML id for the article's "Pin until" field (article ids may hold any character)."""
    return "until-" + hashlib.sha256(article_id.encode()).hexdigest()[:12]


def _in_site_order(slugs: set[str]) -> list[str]:
    """The site's order, the same on every database (rows come back in any order)."""
    return [slug for slug in CATEGORIES if slug in slugs]


@operator
async def article_action(request: Request) -> Response:
    w = web(request)
    article_id = str(request.path_params["article"])
    data = await action_form(request, "admin-article", article_id)
    action = data.text("action", 20, required=True)
    if action not in ACTIONS:
        raise WebError(400, f"action: unknown action {action[:20]!r}", field="action")
    typed = data.text("until", 40)
    try:
        until = _until(typed) if action == "pin" else None
        await w.db(apply, w, article_id, action, until)
    except ValidationError as exc:
        audit(request, f"page.article.{action}", "refused", article=article_id[:80])
        if exc.field == "id":
            raise WebError(404, str(exc), field=exc.field) from exc
        refused = Refused(article_id, exc.field, exc.problem, typed)
        return await _listing(_back_to_list(request, data.text("back", 2000)), refused)
    audit(request, f"page.article.{action}", "ok", article=article_id[:80])
    return done("/admin/articles", ACTIONS[action], **_filters(data.text("back", 2000)))


def _filters(back: str) -> dict[str, str]:
    """The list's filters the action came from, so the operator lands on the same list."""
    path, _, query = back.partition("?")
    if path != "/admin/articles":
        return {}
    return {
        k: v
        for k, v in parse_qsl(query)
        if k in ("q", "category", "kind", "source", "state", "cursor")
    }


def _back_to_list(request: Request, back: str) -> Request:
    """The list the refused action came from, as a GET of it: it is shown again, with the
    error, where the operator was (README: a refused form comes back with the error)."""
    query = urlencode(_filters(back)).encode()
    return Request({**request.scope, "method": "GET", "query_string": query}, request.receive)


def _until(raw: str) -> datetime:
    """The form's ``datetime-local`` (read as UTC, as the page says) or an ISO time with a zone."""
    if not raw:
        raise ValidationError("until", "required, the time the pin runs out")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValidationError("until", f"not a date and time: {raw[:40]!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


ROUTES = [
    Route("/admin/articles", list_page, methods=["GET"]),
    Route("/admin/articles/{article:path}", article_action, methods=["POST"]),
]
