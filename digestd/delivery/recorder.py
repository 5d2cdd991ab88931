"""Outcomes written while sending goes on, with the crash window still one batch.

The sender used to stop after each batch to write its outcomes. A :class:`Recorder` writes
them in chunks, in the background, while the following messages are on the wire. What a
kill -9 can repeat is the messages that left but whose outcome is not written yet; the
recorder keeps that number bounded: a message may go on the wire only after
:meth:`Recorder.admit`, which waits while ``limit`` sent messages (one batch) are still
unrecorded. So the crash window is what it was, at most one batch per worker.

A slow relay (a content filter taking seconds per message) would leave a chunk's worth
of taken messages unrecorded for minutes; so an outcome waits at most
:data:`FLUSH_AFTER` for its chunk to fill, and a kill -9 repeats at most what that and the
messages on the wire come to.

A write that fails (the database went away) stops the admission of further messages
(:attr:`Recorder.failed`; waiters are woken so they can give up) and is raised by
:meth:`Recorder.close`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Entry = TypeVar("Entry")
FLUSH_AFTER = 0.2  # seconds an outcome may wait for its chunk to fill


class Recorder(Generic[Entry]):
    def __init__(
        self,
        write: Callable[[list[Entry]], Awaitable[None]],
        limit: int,
        flush_after: float = FLUSH_AFTER,
    ) -> None:
        """``write`` records a list of entries (one transaction); ``limit`` bounds how many
        admitted messages may wait unrecorded, ``flush_after`` (seconds) how long."""
        self._write_entries = write
        self._limit = limit
        self._flush_after = flush_after
        # A chunk is a quarter of a batch: few transactions, and the last chunk of a batch is
        # small enough that the next batch never waits for it.
        self._chunk = max(1, limit // 4)
        self._unrecorded = asyncio.Semaphore(limit)
        self._pending: list[tuple[Entry, bool]] = []
        self._flush = False
        self._writing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.failed: Exception | None = None

    async def admit(self) -> None:
        """Wait until one more message may go on the wire; pair with ``add(..., admitted=True)``."""
        await self._unrecorded.acquire()

    def add(self, entry: Entry, *, admitted: bool = False) -> None:
        self._pending.append((entry, admitted))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_after, self._timed_out)
        self._kick()

    def _timed_out(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write what is pending without waiting for a full chunk (a batch has ended)."""
        self._flush = True
        self._kick()

    async def settle(self) -> None:
        """Write everything still pending and wait for it: a claim that follows sees it
        (released rows are claimable again)."""
        while True:
            self.flush()
            if self._writing is None:
                return
            await self._writing

    async def close(self) -> None:
        """Write everything still pending; raise the error of a write that failed."""
        await self.settle()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.failed is not None:
            raise self.failed

    def _kick(self) -> None:
        if self._writing is not None or self.failed is not None or not self._pending:
            return
        if self._flush or len(self._pending) >= self._chunk:
            self._writing = asyncio.create_task(self._write(), name="record outcomes")

    async def _write(self) -> None:
        pending, self._pending = self._pending, []
        self._flush = False  # everything asked for is in this write
        try:
            await self._write_entries([entry for entry, _ in pending])
        except Exception as exc:
            self.failed = exc
            # Senders waiting in admit() wake up, see ``failed`` and send nothing more.
            for _ in range(self._limit):
                self._unrecorded.release()
            return
        finally:
            self._writing = None
        for _ in range(sum(admitted for _, admitted in pending)):
            self._unrecorded.release()
        self._kick()
