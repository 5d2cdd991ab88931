"""Tracked clicks answered in groups (group commit): the clicks that arrive while one group
is in the database are looked up and written together in the next one, in one transaction,
before any of their answers goes out. One group at a time, so SQLite's single writer never
sleeps in its busy handler, and a burst of clicks costs a few transactions and thread hops,
not one each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from digestd.readers.clicks import Target, receive, targets

Link = tuple[int, int]  # (delivery id, link number)


@dataclass
class _Group:
    links: list[Link] = field(default_factory=list)
    received: list[tuple[int, int, datetime]] = field(default_factory=list)  # to record
    answered: asyncio.Future[dict[Link, Target]] | None = None


class ClickDesk:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._next = _Group()
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def follow(
        self, delivery_id: int, position: int, record_at: datetime | None
    ) -> Target | None:
        """Where the link goes (None: unknown); with ``record_at``, the click is committed
        before this returns."""
        group = self._next
        if group.answered is None:
            group.answered = asyncio.get_running_loop().create_future()
        group.links.append((delivery_id, position))
        if record_at is not None:
            group.received.append((delivery_id, position, record_at))
        answered = group.answered
        if not self._busy:
            self._busy = True
            self._drainer = asyncio.ensure_future(self._drain())
        return (await answered).get((delivery_id, position))

    async def _drain(self) -> None:
        try:
            while self._next.links:
                group, self._next = self._next, _Group()
                assert group.answered is not None
                try:
                    found = await run_in_threadpool(self._answer, group)
                except Exception as exc:  # each click waiting on it answers the error
                    group.answered.set_exception(exc)
                else:
                    group.answered.set_result(found)
        finally:
            self._busy = False

    def _answer(self, group: _Group) -> dict[Link, Target]:
        with self.sessions.begin() as session:
            found = targets(session, group.links)
            received = [row for row in group.received if (row[0], row[1]) in found]
            if received:
                receive(session, received)
            return found
