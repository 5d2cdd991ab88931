"""Articles in: validate SPEC §3 objects one by one and store them (a re-sent id updates).

Validation is separate from storage so every entry point (CLI file, HTTP API, feeds)
reports the same per-item errors and keeps the valid items of a batch. Text that cannot be
stored is refused per field, never repaired: a NUL character (PostgreSQL's text has no
room for it) or half of a UTF-16 surrogate pair (``"\ud800"`` in JSON, not text at all).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digestd.content.categories import CATEGORIES
from digestd.content.documents import Undecodable
from digestd.content.text import first_unshowable
from digestd.db import insert_ignoring_conflicts
from digestd.errors import ValidationError
from digestd.instants import parse_instant
from digestd.models import Article, ArticleCategory

KINDS = ("news", "deals", "social", "blogs", "videos", "podcasts")
MAX_TEXT = 20_000
MAX_ID = 200  # characters of an article's id (the column's length)
MAX_SCORE = 1e12
LOOKUP_CHUNK = 500  # ids per IN list: far below SQLite's bound-parameter limit


@dataclass(frozen=True)
class ArticleIn:
    id: str
    url: str
    title: str
    published_at: datetime
    categories: tuple[str, ...]
    source: str = ""
    kind: str = "news"
    why_it_matters: str = ""
    summary: str = ""  # the publisher's own summary (a feed's description): never labelled
    key_takeaways: tuple[str, ...] = ()
    companies: tuple[dict[str, str], ...] = ()
    analysis: str = ""
    image_url: str | None = None
    score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ItemError:
    position: int  # 1-based: the item's index in an array, or its line in JSONL
    field: str
    problem: str

    def __str__(self) -> str:
        return f"item {self.position}: {self.field}: {self.problem}"


def _text(data: dict[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ValidationError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    _storable(name, value)
    value = value.strip()
    if required and not value:
        raise ValidationError(name, "must not be empty")
    if len(value) > limit:
        raise ValidationError(name, f"is longer than {limit} characters")
    return value


def _storable(name: str, value: str) -> None:
    bad = first_unshowable(value)
    if bad is None:
        return
    if bad == "\x00":
        raise ValidationError(name, "must not contain NUL characters")
    if "\ud800" <= bad <= "\udfff":
        raise ValidationError(name, "is not valid text (a lone UTF-16 surrogate)")
    raise ValidationError(
        name, f"must not contain control characters such as U+{ord(bad):04X}: no email can show it"
    )


def _shown(value: Any) -> str:
    """A value quoted in an error: short strings as they are, anything else by its type (a
    nested list's repr could be megabytes deep)."""
    return repr(value[:80]) if isinstance(value, str) else f"a {type(value).__name__}"


def _url(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = _text(data, name, required=required, limit=2000)
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValidationError(name, f"must be an absolute http(s) URL, got {value[:80]!r}")
    return value


def _published_at(data: dict[str, Any]) -> datetime:
    return parse_instant("published_at", _text(data, "published_at", required=True, limit=64))


def _string_list(data: dict[str, Any], name: str, limit: int = 2000) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(name, "must be a list of strings")
    if any(len(v) > limit for v in value):
        raise ValidationError(name, f"has an entry longer than {limit} characters")
    for entry in value:
        _storable(name, entry)
    return tuple(v.strip() for v in value if v.strip())


def _companies(data: dict[str, Any]) -> tuple[dict[str, str], ...]:
    value = data.get("companies")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationError("companies", "must be a list of {name, ticker} objects")
    companies: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValidationError(f"companies[{i}]", "must be an object with a string name")
        ticker = item.get("ticker")
        if ticker is not None and not isinstance(ticker, str):
            raise ValidationError(f"companies[{i}].ticker", "must be a string")
        company = {"name": _bounded(f"companies[{i}].name", item["name"], 200)}
        if ticker:
            company["ticker"] = _bounded(f"companies[{i}].ticker", ticker, 20)
        companies.append(company)
    return tuple(companies)


def _bounded(name: str, value: str, limit: int) -> str:
    _storable(name, value)
    value = value.strip()
    if len(value) > limit:  # refused, never cut: a cut name would be someone else's
        raise ValidationError(name, f"is longer than {limit} characters")
    return value


def validate(data: Any) -> ArticleIn:
    """One SPEC §3 object → :class:`ArticleIn`, or :class:`ValidationError` naming the field."""
    if not isinstance(data, dict):
        raise ValidationError("item", f"must be a JSON object, got {type(data).__name__}")
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise ValidationError("categories", "is required: a non-empty list of category slugs")
    slugs: list[str] = []
    for slug in categories:
        if not isinstance(slug, str) or slug.strip().lower() not in CATEGORIES:
            raise ValidationError("categories", f"unknown category {_shown(slug)}")
        if slug.strip().lower() not in slugs:
            slugs.append(slug.strip().lower())
    kind = "news" if data.get("kind") is None else data["kind"]
    if not isinstance(kind, str) or kind not in KINDS:  # "", [] or false: no kind at all
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}, got {_shown(kind)}")
    return ArticleIn(
        id=_article_id(data),
        url=_url(data, "url", required=True) or "",
        title=_text(data, "title", required=True, limit=1000),
        published_at=_published_at(data),
        categories=tuple(slugs),
        source=_text(data, "source", limit=200),
        kind=kind,
        why_it_matters=_text(data, "why_it_matters"),
        summary=_text(data, "summary"),
        key_takeaways=_string_list(data, "key_takeaways"),
        companies=_companies(data),
        analysis=_text(data, "analysis"),
        image_url=_url(data, "image_url", required=False),
        score=_score(data.get("score")),
    )


def _article_id(data: dict[str, Any]) -> str:
    value = _text(data, "id", required=True, limit=MAX_ID)
    # It is a path segment (/api/articles/{id}/hold): a line break could never be routed.
    if any(c.isspace() and c != " " for c in value):
        raise ValidationError("id", "must not contain tabs or line breaks")
    return value


def _score(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("score", f"must be a number, got {_shown(value)}")
    try:
        score = float(value)  # an integer of 400 digits does not fit
    except OverflowError:
        score = math.inf
    if not math.isfinite(score) or not 0 <= score <= MAX_SCORE:
        shown = (
            "NaN"
            if math.isnan(score)
            else "a number too large"
            if math.isinf(score)
            else f"{score:g}"
        )
        raise ValidationError("score", f"must be a number from 0 to {MAX_SCORE:g}, got {shown}")
    return score


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    errors: list[ItemError] = field(default_factory=list)


def ingest(session: Session, items: Iterable[tuple[int, Any]]) -> IngestReport:
    """Validate and store each item; invalid ones are reported and the rest kept."""
    report = IngestReport()
    valid: dict[str, ArticleIn] = {}
    for position, item in items:
        if isinstance(item, Undecodable):
            report.errors.append(ItemError(position, item.field, item.problem))
            continue
        try:
            article = validate(item)
        except ValidationError as exc:
            report.errors.append(ItemError(position, exc.field, exc.problem))
            continue
        valid[article.id] = article  # the last copy of an id in one batch wins
    added = upsert(session, list(valid.values()))
    report.added, report.updated = added, len(valid) - added
    return report


# Columns a re-sent id overwrites (created_at stays the first time it was seen).
_UPDATED = (
    "url",
    "title",
    "source",
    "published_at",
    "kind",
    "why_it_matters",
    "summary",
    "key_takeaways",
    "companies",
    "analysis",
    "image_url",
    "score",
    "updated_at",
)


def upsert(session: Session, articles: list[ArticleIn]) -> int:
    """Store ``articles`` (a known id is updated, its categories replaced); the number new.

    Several workers may ingest one new item at once (two pollers, the API and a feed):
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` says which rows this call created,
    and ``INSERT ... ON CONFLICT (id) DO UPDATE`` writes the rest, so neither raises
    IntegrityError. Rows go in id order: two transactions lock the same rows in the same
    order and cannot deadlock on PostgreSQL.
    """
    if not articles:
        return 0
    session.flush()  # the ORM's pending changes first, in statement order
    now = datetime.now(UTC)
    rows = [_row(article, now) for article in sorted(articles, key=lambda a: a.id)]
    table = Article.__table__
    insert = _insert_for(session)
    new = {
        str(r.id)
        for r in session.execute(
            insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id),
            rows,
        )
    }
    known = [row for row in rows if row["id"] not in new]
    if known:
        _keep_unchanged_stamps(session, known)
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["id"], set_={name: statement.excluded[name] for name in _UPDATED}
        )
        session.execute(statement, known)
        for start in range(0, len(known), LOOKUP_CHUNK):
            ids = [row["id"] for row in known[start : start + LOOKUP_CHUNK]]
            session.execute(delete(ArticleCategory).where(ArticleCategory.article_id.in_(ids)))
    categories = [
        {"article_id": article.id, "category": slug}
        for article in articles
        for slug in article.categories
    ]
    insert_ignoring_conflicts(
        session, ArticleCategory.__table__, categories, ["article_id", "category"]
    )
    for loaded in list(session.identity_map.values()):  # written past the ORM: none stale
        if isinstance(loaded, Article | ArticleCategory):
            session.expire(loaded)
    return len(new)


def _keep_unchanged_stamps(session: Session, rows: list[dict[str, Any]]) -> None:
    """A re-sent article whose text did not change keeps its ``updated_at``. The stamp is
    part of a digest's key: a correction is rendered anew for the readers planned after it,
    and a feed re-sending the same items every poll costs no render."""
    content = [name for name in _UPDATED if name != "updated_at"]
    columns = [Article.__table__.c[name] for name in content]
    by_id = {row["id"]: row for row in rows}
    ids = list(by_id)
    for start in range(0, len(ids), LOOKUP_CHUNK):
        stored = session.execute(
            select(Article.id, Article.updated_at, *columns).where(
                Article.id.in_(ids[start : start + LOOKUP_CHUNK])
            )
        )
        for found in stored:
            row = by_id[found.id]
            if all(row[name] == getattr(found, name) for name in content):
                row["updated_at"] = found.updated_at


def _row(article: ArticleIn, now: datetime) -> dict[str, Any]:
    return {
        "id": article.id,
        "url": article.url,
        "title": article.title,
        "source": article.source,
        "published_at": article.published_at,
        "kind": article.kind,
        "why_it_matters": article.why_it_matters,
        "summary": article.summary,
        "key_takeaways": list(article.key_takeaways),
        "companies": [dict(c) for c in article.companies],
        "analysis": article.analysis,
        "image_url": article.image_url,
        "score": article.score,
        "created_at": now,
        "updated_at": now,
    }


def _insert_for(session: Session) -> Any:
    """The dialect's ``insert`` (the one with ``on_conflict_do_*``)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
