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

Once it has planned, the helper may go on with other work the sending process hands it
(``then``, an :class:`AfterPlanning`: delivery's sending beside the sender, see
:mod:`digestd.delivery.helper_sending`); what it tells meanwhile reaches ``heard`` in the
sending process, and :meth:`Enqueuer.ask_to_stop` asks it to finish early.

Its lifetime is the sender's:

- Ctrl-C reaches the whole process group and systemd signals the whole cgroup; stopping is
  the sender's decision (it releases its batch, then ends its helper), so the helper
  ignores SIGINT and SIGTERM and is ended with SIGKILL.
- If the sender itself is killed (kill -9, the OOM killer), a watchdog thread in the helper
  notices it was re-parented and exits: no orphan keeps planning.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

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


class AfterPlanning(Protocol):
    """Work for the helper once it has planned (it must pickle: it crosses to the helper)."""

    def run(self, now: datetime, tell: Callable[[Any], None], stopping: Callable[[], bool]) -> Any:
        """Runs in the helper: ``tell`` sends news to the sending process, ``stopping()``
        says it asked the helper to stop; the value returned is the work's answer."""
        ...


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
        # After planning with ``then``: "holding" (the helper waits for go_on or a stop),
        # "going" (it runs ``then``; one "stop" may still be said), "" (neither).
        self._then = ""
        self._then_lock = threading.Lock()  # the event loop and the pipe's reader both tell
        self.after_planning: asyncio.Future[Any] | None = None  # ``then``'s answer to come
        # What the planning under way has committed so far: the tick's count if it is
        # stopped before it ends (each committed batch stays queued).
        self.committed = EnqueueReport()

    @property
    def holding(self) -> bool:
        """The helper has planned and waits to go on with ``then`` (:meth:`go_on`)."""
        return self._then == "holding"

    async def enqueue(
        self,
        policy: Policy,
        now: datetime,
        progress: Callable[[], None] = lambda: None,
        then: AfterPlanning | None = None,
    ) -> EnqueueReport:
        """``progress`` hears of each batch planned and committed, in this process or the
        helper (called on the event loop). With ``then`` a helper that has planned waits to
        go on with it (:attr:`holding`): :meth:`go_on` or :meth:`ask_to_stop` say which.
        Without a helper, ``then`` is not done."""
        self.after_planning = None
        self.committed = EnqueueReport()
        if self.in_helper and await asyncio.to_thread(self._anything_due, now):
            loop = asyncio.get_running_loop()

            def committed() -> None:  # in the thread reading the helper's pipe
                loop.call_soon_threadsafe(progress)

            try:
                return await asyncio.to_thread(self._call, policy, now, committed, then)
            except HelperDied:
                # Killed (the OOM killer, an operator): what it committed stays, the rest is
                # planned here. A new helper is started for the next tick.
                log.warning("the enqueue helper process died; enqueueing in this process")
                self.close()
        return await asyncio.to_thread(
            enqueue_due, self.sessions, policy, self.renderer, now, progress, self.committed
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

    def _call(
        self,
        policy: Policy,
        now: datetime,
        committed: Callable[[], None],
        then: AfterPlanning | None,
    ) -> EnqueueReport:
        self.start()
        assert self._connection is not None
        try:
            self._connection.send((policy, now, then))
            outcome, value = self._connection.recv()
            while outcome == "batch":  # a batch of queue rows is committed: the sender may go
                self.committed = value
                committed()
                outcome, value = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise HelperDied(str(exc)) from exc
        if outcome == "error":
            raise value
        assert isinstance(value, EnqueueReport)
        if outcome == "planned":
            self._then = "holding"
        return value

    def go_on(self, heard: Callable[[Any], None]) -> bool:
        """Let the holding helper go on with ``then``: :attr:`after_planning` is its answer
        to come, ``heard`` hears its news (on the event loop). False if it has gone."""
        assert self._connection is not None and self.holding
        loop = asyncio.get_running_loop()

        def news(value: Any) -> None:  # in the thread reading the helper's pipe
            loop.call_soon_threadsafe(heard, value)

        with self._then_lock:
            try:
                self._connection.send("go")
            except OSError:  # died since it planned: the next tick starts another
                self._then = ""
                return False
            self._then = "going"
        self.after_planning = asyncio.ensure_future(asyncio.to_thread(self._follow, news))
        # Its end is awaited by whoever let it go on, unless they stopped first (close()).
        self.after_planning.add_done_callback(_retrieved)
        return True

    def _follow(self, news: Callable[[Any], None]) -> Any:
        assert self._connection is not None
        try:
            outcome, value = self._connection.recv()
            while outcome == "news":
                news(value)
                outcome, value = self._connection.recv()
            self.ask_to_stop()  # the end of it: the helper stops listening for a stop
        except (EOFError, OSError) as exc:
            raise HelperDied(str(exc)) from exc
        if outcome == "error":
            raise value
        return value

    def ask_to_stop(self) -> None:
        """A holding helper does not go on; a going one finishes early (a no-op otherwise)."""
        with self._then_lock:
            if not self._then or self._connection is None:
                return
            self._then = ""
            with contextlib.suppress(OSError):  # it is gone: _follow hears so
                self._connection.send("stop")

    def close(self) -> None:
        """Stop the helper now, even mid-edition: each batch it committed is complete and
        the next tick plans the rest (waiting would make stopping as slow as planning)."""
        process, self._process = self._process, None
        connection, self._connection = self._connection, None
        self._then = ""
        if process is not None:
            process.kill()  # it ignores SIGTERM
            process.join()
        if connection is not None:
            connection.close()


def _retrieved(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _serve(connection: Connection, database_url: str, masthead: Masthead, directory: Path) -> None:
    """The helper process: plan what it is asked, one request at a time, until the pipe closes."""
    _leave_stopping_to_the_sender()
    collect_less_often()
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    renderer = DigestRenderer(masthead, directory)
    while True:
        try:
            policy, now, then = connection.recv()
        except EOFError:
            return
        asked = time.monotonic()
        so_far = EnqueueReport()
        # Each batch committed is told with the counts so far (pickled: a copy as they are).
        committed = functools.partial(connection.send, ("batch", so_far))
        try:
            report = enqueue_due(sessions, policy, renderer, now, committed, so_far)
        except Exception as exc:  # handed to the sender, which raises it where it waits
            _answer(connection, ("error", exc))
            continue
        if then is None:
            _answer(connection, ("ok", report))
        else:
            connection.send(("planned", report))
            try:
                go = connection.recv() == "go"
            except EOFError:
                return
            if go:
                _go_on(connection, then, now + timedelta(seconds=time.monotonic() - asked))


def _go_on(connection: Connection, then: AfterPlanning, now: datetime) -> None:
    """Run ``then`` while a thread listens for the sending process's one "stop": asked to
    stop early, or the end of this request once it has our answer."""
    stop = threading.Event()

    def listen() -> None:
        with contextlib.suppress(EOFError, OSError):
            connection.recv()
        stop.set()

    listener = threading.Thread(target=listen, name="listen-for-stop", daemon=True)
    listener.start()
    try:
        answer: tuple[str, Any] = (
            "ok",
            then.run(now, lambda news: connection.send(("news", news)), stop.is_set),
        )
    except Exception as exc:
        answer = ("error", exc)
    _answer(connection, answer)
    listener.join()  # the next request is read here, not by it


def _answer(connection: Connection, answer: tuple[str, Any]) -> None:
    try:
        connection.send(answer)
    except Exception as exc:  # an error that does not pickle: its words still do
        connection.send(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
        log.debug("could not send the helper's answer as it was: %s", exc)


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
