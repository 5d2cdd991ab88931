"""The digests of an edition: one row per distinct layout, rendered by whoever creates it.

On PostgreSQL, creating a digest and rendering it happen in the same transaction: the
planner inserts the rows it needs (``ON CONFLICT DO NOTHING ... RETURNING``) and renders
exactly the ones its insert created. Another worker planning the same digest meanwhile
waits on the unique key until that transaction commits, then finds the row with its
template: each distinct digest is rendered once, however many workers plan the edition.

On SQLite, where one process plans, a batch renders the digests it does not find before
it writes anything: SQLite's write lock is the whole database's, and the sender must not
wait on renders to claim and record.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.db import insert_ignoring_conflicts
from digestd.mail.digests import (
    DigestRenderer,
    Rendering,
    Unrendered,
    render_digests,
    store_renderings,
)
from digestd.mail.layout import Layout
from digestd.models import Digest, EditionKind

DigestKey = tuple[int, str]  # (edition id, content key)
LOOKUP_CHUNK = 500


class DigestBook:
    """The digests one planning run has met: their ids, and why any failed to render."""

    def __init__(self, kind: EditionKind, renderer: DigestRenderer, now: datetime) -> None:
        self.kind = kind
        self.renderer = renderer
        self.now = now
        self.rendered = 0  # digests this run rendered
        self._known: dict[DigestKey, tuple[int, str | None]] = {}

    def get(self, key: DigestKey) -> tuple[int, str | None]:
        """(digest id, render error or None) of a digest :meth:`provide` made sure of."""
        return self._known[key]

    def provide(
        self, session: Session, wanted: Mapping[DigestKey, Layout], periods: Mapping[int, str]
    ) -> None:
        """Make sure every digest in ``wanted`` exists and is rendered (``periods``: each
        edition id's local date)."""
        new = {key: layout for key, layout in wanted.items() if key not in self._known}
        early: dict[DigestKey, Rendering] = {}
        if new and session.get_bind().dialect.name == "sqlite":
            # SQLite has one writer for the whole database: rendered after the insert, every
            # render would hold the sender's claims and outcomes waiting (most of a large
            # edition's first seconds). Before any write of this batch, no lock is held; the
            # one process planning on SQLite then inserts what it rendered.
            self._look_up(session, list(new))
            new = {key: layout for key, layout in new.items() if key not in self._known}
            early = render_digests(session, self.renderer, self._unrendered(new, periods))
        if not new:
            return
        # In key order, as every planner inserts them: two inserting the same digests in
        # different orders would each wait on a row the other inserted first (a deadlock
        # on PostgreSQL, one of them failing its batch).
        new = dict(sorted(new.items(), key=lambda item: item[0]))
        created = insert_ignoring_conflicts(
            session,
            Digest.__table__,
            [
                {
                    "edition_id": e,
                    "content_key": k,
                    "layout": layout.to_json(),
                    "created_at": self.now,
                }
                for (e, k), layout in new.items()
            ],
            ["edition_id", "content_key"],
            returning=["id", "edition_id", "content_key"],
        )
        mine = {(row.edition_id, row.content_key): row.id for row in created}
        renderings = early or render_digests(
            session, self.renderer, self._unrendered({key: new[key] for key in mine}, periods)
        )
        results = store_renderings(session, {mine[key]: renderings[key] for key in mine})
        self.rendered += len(mine)
        for key, digest_id in mine.items():
            self._known[key] = (digest_id, results[digest_id].error)
        self._look_up(session, [key for key in new if key not in mine])

    def _unrendered(
        self, layouts: Mapping[DigestKey, Layout], periods: Mapping[int, str]
    ) -> dict[DigestKey, Unrendered]:
        return {
            key: Unrendered(self.kind, periods[key[0]], layout) for key, layout in layouts.items()
        }

    def _look_up(self, session: Session, keys: list[DigestKey]) -> None:
        """Digests another run created (an earlier batch's transaction, another worker)."""
        by_edition: dict[int, list[str]] = {}
        for edition_id, key in keys:
            by_edition.setdefault(edition_id, []).append(key)
        for edition_id, content_keys in by_edition.items():
            for start in range(0, len(content_keys), LOOKUP_CHUNK):
                rows = session.execute(
                    select(Digest.id, Digest.content_key, Digest.render_error).where(
                        Digest.edition_id == edition_id,
                        Digest.content_key.in_(content_keys[start : start + LOOKUP_CHUNK]),
                    )
                )
                for digest_id, key, error in rows:
                    self._known[(edition_id, key)] = (digest_id, error)
