"""Articles in: validate SPEC §3 objects one by one and store them (a re-sent id updates).

Validation is separate from storage so every entry point (CLI file, HTTP API, feeds)
reports the same per-item errors and keeps the valid items of a batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digestd.content.categories import CATEGORIES
from digestd.errors import InputError, ValidationError
from digestd.models import Article, ArticleCategory

KINDS = ("news", "deals", "social", "blogs", "videos", "podcasts")
MAX_TEXT = 20_000


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
    value = value.strip()
    if required and not value:
        raise ValidationError(name, "must not be empty")
    if len(value) > limit:
        raise ValidationError(name, f"is longer than {limit} characters")
    return value


def _url(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = _text(data, name, required=required, limit=2000)
    if not value:
        return None
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c in value for c in " \r\n")
    ):
        raise ValidationError(name, f"must be an absolute http(s) URL, got {value[:80]!r}")
    return value


def _published_at(data: dict[str, Any]) -> datetime:
    value = _text(data, "published_at", required=True, limit=64)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError("published_at", f"not an ISO 8601 date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ValidationError(
            "published_at", f"needs a timezone (e.g. {value}Z or {value}+00:00), got {value!r}"
        )
    return parsed.astimezone(UTC)


def _string_list(data: dict[str, Any], name: str, limit: int = 2000) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(name, "must be a list of strings")
    if any(len(v) > limit for v in value):
        raise ValidationError(name, f"has an entry longer than {limit} characters")
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
        company = {"name": item["name"].strip()[:200]}
        if ticker:
            company["ticker"] = ticker.strip()[:20]
        companies.append(company)
    return tuple(companies)


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
            raise ValidationError("categories", f"unknown category {slug!r}")
        if slug.strip().lower() not in slugs:
            slugs.append(slug.strip().lower())
    kind = data.get("kind") or "news"
    if kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    score = data.get("score", 0)
    if score is None:
        score = 0
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValidationError("score", f"must be a number, got {score!r}")
    if score < 0:
        raise ValidationError("score", f"must be ≥ 0, got {score!r}")
    return ArticleIn(
        id=_text(data, "id", required=True, limit=200),
        url=_url(data, "url", required=True) or "",
        title=_text(data, "title", required=True, limit=1000),
        published_at=_published_at(data),
        categories=tuple(slugs),
        source=_text(data, "source", limit=200),
        kind=kind,
        why_it_matters=_text(data, "why_it_matters"),
        key_takeaways=_string_list(data, "key_takeaways"),
        companies=_companies(data),
        analysis=_text(data, "analysis"),
        image_url=_url(data, "image_url", required=False),
        score=float(score),
    )


def parse_document(text: str) -> Iterator[tuple[int, Any]]:
    """(position, decoded item) from a JSON object, a JSON array, or JSONL.

    A JSON document that does not parse is one :class:`InputError` for the whole file; in
    JSONL a bad line is reported by its line number and the other lines still count.
    """
    stripped = text.lstrip()
    if not stripped:
        raise InputError("no articles: the input is empty")
    if stripped[0] in "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
        yield from enumerate(items, start=1)
        return
    try:
        single = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        yield 1, single
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, _Malformed(f"malformed JSON at column {exc.colno}: {exc.msg}")


@dataclass(frozen=True)
class _Malformed:
    problem: str


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
        if isinstance(item, _Malformed):
            report.errors.append(ItemError(position, "line", item.problem))
            continue
        try:
            article = validate(item)
        except ValidationError as exc:
            report.errors.append(ItemError(position, exc.field, exc.problem))
            continue
        valid[article.id] = article  # the last copy of an id in one batch wins
    existing = set(session.scalars(select(Article.id).where(Article.id.in_(list(valid)))))
    for article in valid.values():
        store(session, article, exists=article.id in existing)
        if article.id in existing:
            report.updated += 1
        else:
            report.added += 1
    return report


def store(session: Session, article: ArticleIn, *, exists: bool) -> None:
    values = {
        "url": article.url,
        "title": article.title,
        "source": article.source,
        "published_at": article.published_at,
        "kind": article.kind,
        "why_it_matters": article.why_it_matters,
        "key_takeaways": list(article.key_takeaways),
        "companies": [dict(c) for c in article.companies],
        "analysis": article.analysis,
        "image_url": article.image_url,
        "score": article.score,
    }
    if exists:
        row = session.get(Article, article.id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        session.execute(delete(ArticleCategory).where(ArticleCategory.article_id == article.id))
        session.flush()
        session.expire(row, ["categories"])
    else:
        session.add(Article(id=article.id, **values))
        session.flush()
    session.add_all(ArticleCategory(article_id=article.id, category=c) for c in article.categories)
    session.flush()
