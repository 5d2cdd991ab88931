"""What one digest holds, in display order: the reader's categories and sections of articles.

The planner decides a layout (:mod:`digestd.planning.layouts`); everything that shows a
digest reads it from here. Stored as JSON in ``digests.layout``::

    {"categories": [slug, ...],
     "sections": [{"category": slug | null, "lead": true?, "articles": [[id, slug], ...]}]}

where each article's slug is the category its card shows (one the reader follows). The
JSON of a layout is also what names its digest (:meth:`Layout.content_key`): two readers
whose layouts are equal share one digest, rendered once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    article_id: str
    category: str  # the category shown on the article's card


@dataclass(frozen=True)
class Section:
    category: str | None  # None: not grouped by category (the daily's stories, the lead)
    entries: tuple[Entry, ...]
    lead: bool = False  # the top story (older dailies have none: their first card leads)


@dataclass(frozen=True)
class Layout:
    categories: tuple[str, ...]  # the reader's categories, in the site's order
    sections: tuple[Section, ...]

    def article_ids(self) -> list[str]:
        return [entry.article_id for section in self.sections for entry in section.entries]

    def to_json(self) -> dict[str, Any]:
        sections: list[dict[str, Any]] = []
        for section in self.sections:
            data: dict[str, Any] = {
                "category": section.category,
                "articles": [[e.article_id, e.category] for e in section.entries],
            }
            if section.lead:
                data = {"lead": True, **data}
            sections.append(data)
        return {"categories": list(self.categories), "sections": sections}

    def content_key(self, versions: Mapping[str, str] | None = None) -> str:
        """What makes two readers' digests one: the layout, and with ``versions`` (article
        id -> when its text last changed) the articles as they read now: readers planned
        after a correction get a digest rendered with it."""
        content: dict[str, Any] = self.to_json()
        if versions:
            content["versions"] = {a: versions.get(a, "") for a in self.article_ids()}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        return cls(
            categories=tuple(data["categories"]),
            sections=tuple(
                Section(
                    category=section.get("category"),
                    entries=tuple(Entry(a, c) for a, c in section["articles"]),
                    lead=bool(section.get("lead")),
                )
                for section in data["sections"]
            ),
        )
