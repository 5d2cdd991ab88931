"""Planning due editions in a helper process while the sending process sends.

Planning an edition (who is due, each reader's selection, digests rendered, one queue row
each) is CPU-bound Python. In the sending process it shares one core with composing and
SMTP, and a thread there only takes turns at the GIL. A helper process puts it on another
core, and since each batch of readers commits on its own, the sender starts on the first
rows while the rest are still being planned.

The helper needs only plain data (the database URL, the :class:`Policy`, the digests'
:class:`Masthead`): it opens its own engine (connections never cross a process boundary)
and is started with ``spawn``, so it inherits no event loop, socket or lock from the
sender. Planning is idempotent (the queue's unique key, and ``next_*_at`` moved in the same
transaction as each batch's rows), so if the helper dies the sender plans in-process, from
where it stopped.

Its lifetime is the sender's:

- Ctrl-C reaches the whole process group and systemd signals the whole cgroup; stopping is
  the sender's decision (it releases its batch, then ends its helper), so the helper
  ignores SIGINT and SIGTERM and is ended with SIGKILL.
- If the sender itself is killed (kill -9, the OOM killer), a watchdog thread in the helper
  notices it was re-parented and exits: no orphan keeps planning.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from digestd.collector import collect_less_often
from digestd.db import make_engine, make_sessions
from digestd.mail.digests import DigestRenderer, Masthead
from digestd.planning.planner import anything_due, enqueue_due
from digestd.planning.policy import EnqueueReport, Policy

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often a helper checks that its sender is still alive


class HelperDied(Exception):
    """The helper process went away in the middle of a call."""


class Enqueuer:
    """Runs :func:`enqueue_due` in a helper process (``in_helper``) or in a thread here."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        database_url: str,
        renderer: DigestRenderer,
        *,
        in_helper: bool,
    ) -> None:
        self.sessions = sessions
        self.database_url = database_url
        self.renderer = renderer
        self.in_helper = in_helper
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None

    async def enqueue(
        self, policy: Policy, now: datetime, progress: Callable[[], None] = lambda: None
    ) -> EnqueueReport:
        """``progress`` hears of each batch planned and committed, in this process or the
        helper (called on the event loop)."""
        if self.in_helper and await asyncio.to_thread(self._anything_due, now):
            loop = asyncio.get_running_loop()

            def committed() -> None:  # in the thread reading the helper's pipe
                loop.call_soon_threadsafe(progress)

            try:
                return await asyncio.to_thread(self._call, policy, now, committed)
            except HelperDied:
                # Killed (the OOM killer, an operator): what it committed stays, the rest is
                # planned here. A new helper is started for the next tick.
                log.warning("the enqueue helper process died; enqueueing in this process")
                self.close()
        return await asyncio.to_thread(
            enqueue_due, self.sessions, policy, self.renderer, now, progress
        )

    def _anything_due(self, now: datetime) -> bool:
        """Whether there is planning to do: a helper takes a fraction of a second to start,
        most of an idle tick's time, and would find nobody due."""
        with self.sessions() as session:
            return anything_due(session, now)

    def start(self) -> int:
        """Start the helper (once; it takes a fraction of a second to import what planning
        needs) and return its process id."""
        if self._process is None or not self._process.is_alive():
            if self._process is not None:
                log.warning("the planner's helper process died; starting a new one")
            self.close()
            spawn = multiprocessing.get_context("spawn")
            ours, theirs = spawn.Pipe()
            process = spawn.Process(
                target=_serve,
                args=(theirs, self.database_url, self.renderer.masthead, self.renderer.directory),
                name="digestd-planner",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._process, self._connection = process, ours
        assert self._process.pid is not None
        return self._process.pid

    def _call(self, policy: Policy, now: datetime, committed: Callable[[], None]) -> EnqueueReport:
        self.start()
        assert self._connection is not None
        try:
            self._connection.send((policy, now))
            outcome, value = self._connection.recv()
            while outcome == "batch":  # a batch of queue rows is committed: the sender may go
                committed()
                outcome, value = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise HelperDied(str(exc)) from exc
        if outcome == "error":
            raise value
        assert isinstance(value, EnqueueReport)
        return value

    def close(self) -> None:
        """Stop the helper now, even mid-edition: each batch it committed is complete and
        the next tick plans the rest (waiting would make stopping as slow as planning)."""
        process, self._process = self._process, None
        connection, self._connection = self._connection, None
        if process is not None:
            process.kill()  # it ignores SIGTERM
            process.join()
        if connection is not None:
            connection.close()


def _serve(connection: Connection, database_url: str, masthead: Masthead, directory: Path) -> None:
    """The helper process: plan what it is asked, one request at a time, until the pipe closes."""
    _leave_stopping_to_the_sender()
    collect_less_often()
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    renderer = DigestRenderer(masthead, directory)
    while True:
        try:
            policy, now = connection.recv()
        except EOFError:
            return
        answer: tuple[str, Any]

        def committed() -> None:
            connection.send(("batch", None))

        try:
            answer = ("ok", enqueue_due(sessions, policy, renderer, now, committed))
        except Exception as exc:  # handed to the sender, which raises it where it waits
            answer = ("error", exc)
        try:
            connection.send(answer)
        except Exception as exc:  # an error that does not pickle: its words still do
            connection.send(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
            log.debug("could not send the planner's answer as it was: %s", exc)


def _leave_stopping_to_the_sender() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    threading.Thread(
        target=_exit_with, args=(parent,), name="exit-with-sender", daemon=True
    ).start()


def _exit_with(parent: int) -> None:
    stop = threading.Event()  # never set: wait() is a sleep that cannot be interrupted
    while not stop.wait(WATCH_SECONDS):
        if os.getppid() != parent:
            os._exit(0)  # nothing to clean up: the planner's database work is transactional
