"""Enqueueing due editions in a helper process while the sending process sends.

Planning an edition (who is due, each reader's selection, digests, one queue row each) is
CPU-bound Python: ~60 µs a reader, six seconds for 100 000. In the sending process it
shares one core with composing and SMTP; a thread there only takes turns at the GIL
(measured: no gain at all). A helper process puts it on another core, and since each batch
of 1 000 readers commits on its own, the sender starts on the first rows while the rest
are still being planned.

The helper process needs nothing but the database URL and the :class:`Policy`: it opens
its own engine (connections never cross a process boundary) and is started with ``spawn``,
so it inherits no event loop, socket or lock from the sender. Enqueueing is idempotent (the
queue's unique key, and ``next_*_at`` moved in the same transaction as each batch's rows),
so if the helper dies the sender simply enqueues in-process, from where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from digestd.db import make_engine, make_sessions
from digestd.helper_process import leave_stopping_to_the_sender
from digestd.planning.planner import EnqueueReport, Policy, enqueue_due

log = logging.getLogger(__name__)


def _enqueue_in_helper(database_url: str, policy: Policy, now: datetime) -> EnqueueReport:
    engine = make_engine(database_url)
    try:
        return enqueue_due(make_sessions(engine), policy, now)
    finally:
        engine.dispose()


class Enqueuer:
    """Runs :func:`enqueue_due` in a helper process (``in_helper``) or in a thread here."""

    def __init__(
        self, sessions: sessionmaker[Session], database_url: str, *, in_helper: bool
    ) -> None:
        self.sessions = sessions
        self.database_url = database_url
        self.in_helper = in_helper
        self._pool: ProcessPoolExecutor | None = None

    async def enqueue(self, policy: Policy, now: datetime) -> EnqueueReport:
        if self.in_helper:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    self._helper(), _enqueue_in_helper, self.database_url, policy, now
                )
            except BrokenProcessPool:
                # Killed (OOM killer, an operator): what it committed stays, the rest is
                # planned here. A new helper is started for the next tick.
                log.warning("the enqueue helper process died; enqueueing in this process")
                self.close()
        return await asyncio.to_thread(enqueue_due, self.sessions, policy, now)

    def _helper(self) -> ProcessPoolExecutor:
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                1, mp_context=spawn, initializer=leave_stopping_to_the_sender
            )
        return self._pool

    def close(self) -> None:
        """Stop the helper now, even mid-edition: each batch it committed is complete and
        the next tick plans the rest. (Waiting would make stopping as slow as planning.)"""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor has no public way to stop a running call before Python 3.14.
        for process in list(pool._processes.values()):
            process.kill()  # it ignores SIGTERM (see digestd.helper_process)
        pool.shutdown(wait=True, cancel_futures=True)
