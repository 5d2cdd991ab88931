"""Shared fixtures: a migrated database per test (SQLite, or PostgreSQL when
DIGESTD_TEST_DATABASE_URL points at a server), a real in-process SMTP server, settings.

Every schema is built by running the Alembic migrations, never ``create_all``: once per
session into a template (a file for SQLite, a template database for PostgreSQL), then
copied for each test so tests stay independent and fast.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from digestd import logs
from digestd.config import Settings, load_settings
from digestd.db import make_engine, migrate
from tests.faultsmtp import advertise_pipelining
from tests.helpers import free_port

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal
    from starlette.testclient import TestClient

    from digestd.models import Base, Subscriber
    from digestd.service import Service

# aiosmtpd narrates every connection at INFO from its own threads, after tests end.
logging.getLogger("mail.log").setLevel(logging.WARNING)

TEST_KEY = "test-secret-key-0123456789abcdef"
CLIENT_IP = "203.0.113.10"  # where the ``web`` fixture's requests come from (TEST-NET-3)
# Shaped like a real one: digestd refuses short or placeholder-looking admin tokens.
ADMIN_TOKEN = "admin-test-token-4fK9q2Lm7Rz8"


def _postgres_url() -> str | None:
    import os

    return os.environ.get("DIGESTD_TEST_DATABASE_URL") or None


# Fixtures through which a test reaches the database under test.
_DATABASE_FIXTURES = {"database_url", "empty_postgres"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against PostgreSQL, run only the tests that reach a database, and not the browser
    tests: the others (settings, rendering, SMTP sessions) do the same thing whichever
    database is configured, the browser tests check pages whose queries the HTTP tests
    already run on both, and CI has run them all in its SQLite pass.
    DIGESTD_TEST_EVERYTHING=1 keeps them."""
    import os

    if not _postgres_url() or os.environ.get("DIGESTD_TEST_EVERYTHING"):
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        uses = set(getattr(item, "fixturenames", ())) & _DATABASE_FIXTURES
        in_a_browser = item.path.name.endswith(("_browser.py", "_screenshots.py"))
        (keep if uses and not in_a_browser else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


class _Copies:
    """Copies of the PostgreSQL template database, made ahead of the tests that take them
    and dropped after them by two threads of their own. Creating and dropping a database
    takes ~0.1-0.2 s each; done here, while a test runs, no test waits for either."""

    AHEAD = 2

    def __init__(self, server: str, template: str) -> None:
        self._server = make_url(server).set(drivername="postgresql+psycopg")
        self._template = template
        self._ready: queue.Queue[str | BaseException] = queue.Queue(maxsize=self.AHEAD)
        self._used: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._make, name="db-copies-make", daemon=True),
            threading.Thread(target=self._drop, name="db-copies-drop", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def take(self) -> str:
        """The URL of a fresh copy of the template, for one test."""
        made = self._ready.get()
        if isinstance(made, BaseException):
            raise made
        return self._server.set(database=made).render_as_string(hide_password=False)

    def give_back(self, url: str) -> None:
        self._used.put(make_url(url).database)

    def close(self) -> None:
        self._stopping.set()
        self._threads[0].join()
        while not self._ready.empty():  # made ahead, never taken
            made = self._ready.get()
            if isinstance(made, str):
                self._used.put(made)
        self._used.put(None)
        self._threads[1].join()

    def _make(self) -> None:
        admin = create_engine(self._server, isolation_level="AUTOCOMMIT")
        try:
            while not self._stopping.is_set():
                name = f"digestd_test_{uuid.uuid4().hex[:10]}"
                try:
                    with admin.connect() as conn:
                        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'))
                except Exception as error:  # the test that takes it fails with this
                    self._offer(error)
                    continue
                if not self._offer(name):
                    self._used.put(name)
        finally:
            admin.dispose()

    def _offer(self, made: str | BaseException) -> bool:
        while not self._stopping.is_set():
            try:
                self._ready.put(made, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _drop(self) -> None:
        admin = create_engine(self._server, isolation_level="AUTOCOMMIT")
        try:
            while (name := self._used.get()) is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pg = _postgres_url()
    if pg is None:
        path = tmp_path_factory.mktemp("template") / "template.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        yield str(path)
        return
    admin = create_engine(
        make_url(pg).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"digestd_template_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(str(make_url(pg).set(drivername="postgresql+psycopg", database=name)))
    migrate(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def _postgres_copies(template_database: str) -> Iterator[_Copies]:
    pg = _postgres_url()
    assert pg is not None, "only the PostgreSQL pass makes copies of a template database"
    copies = _Copies(pg, template_database)
    yield copies
    copies.close()


@pytest.fixture
def database_url(
    template_database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    if _postgres_url() is None:
        path = tmp_path / "digestd.db"
        shutil.copyfile(template_database, path)
        yield f"sqlite:///{path}"
        return
    copies: _Copies = request.getfixturevalue("_postgres_copies")
    url = copies.take()
    yield url
    copies.give_back(url)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The DIGESTD_* environment of a test installation (no SMTP: the mail catcher)."""
    return {
        "DIGESTD_DATA_DIR": str(tmp_path / "var"),
        "DIGESTD_DATABASE_URL": database_url,
        "DIGESTD_SECRET_KEYS": TEST_KEY,
        "DIGESTD_BASE_URL": "https://digest.example.com",
        "DIGESTD_FROM": "Tech Pulse <digest@news.example.com>",
        "DIGESTD_POSTAL_ADDRESS": "Tech Pulse Ltd · 1 Market Street · San Francisco, CA 94105",
        # Everything in the test's own process: a spawned helper costs ~0.5 s to start.
        # Tests of the helpers set 1 (test_enqueuer.py, test_render_ahead.py, test_crash.py).
        "DIGESTD_HELPER_PROCESSES": "0",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    data: bytes


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    # recipient address -> (code, message) to answer at RCPT instead of accepting
    reject: dict[str, str] = field(default_factory=dict)
    arrived: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` messages are in (mail sent after an HTTP answer, say)."""
        with self.arrived:
            ok = self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        assert ok, f"expected {count} messages within {timeout}s, got {len(self.messages)}"
        return self.messages

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return advertise_pipelining(responses)  # as Postfix and the big providers do

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        # aiosmtpd reaches DATA only after MAIL FROM; decode_data=False keeps the content bytes.
        assert envelope.mail_from is not None and isinstance(data, bytes)
        with self.arrived:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(data)))
            self.arrived.notify_all()
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port, decode_data=False)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- the HTTP app ------------------------------------------------------------------------


@dataclass
class AppRig:
    """The real service on a migrated database, mailing through the real ``smtp_server``."""

    service: Service
    smtp: SmtpSink

    def subscriber(self, email: str) -> Subscriber | None:
        from sqlalchemy import select

        from digestd.models import Subscriber

        with self.service.sessions() as session:
            found = session.scalars(select(Subscriber).where(Subscriber.email == email)).first()
            if found is not None:
                _ = found.category_slugs  # load while the session is open
            return found

    def status(self, email: str) -> str | None:
        """The stored status of a reader, or None when there is no such reader."""
        found = self.subscriber(email)
        return None if found is None else found.status

    def count(self, model: type[Base]) -> int:
        from sqlalchemy import func, select

        with self.service.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@dataclass
class WebRig(AppRig):
    """The app behind a Starlette TestClient (one event loop for its lifetime)."""

    client: TestClient

    @property
    def portal(self) -> BlockingPortal:
        """The client's event loop: the service's coroutines run there, as the app's do."""
        assert self.client.portal is not None, "the client is open for the rig's lifetime"
        return self.client.portal


@pytest.fixture
def web_env(env: dict[str, str], smtp_server: SmtpSink) -> dict[str, str]:
    return {**env, "DIGESTD_SMTP_URL": smtp_server.url, "DIGESTD_ADMIN_TOKEN": ADMIN_TOKEN}


@contextmanager
def app_client(service: Service) -> Iterator[TestClient]:
    """The app of ``service`` behind a test client, as a reader's browser at CLIENT_IP."""
    from starlette.testclient import TestClient

    from digestd.web.app import create_app

    with TestClient(
        create_app(service),
        base_url="https://digest.example.com",
        follow_redirects=False,
        client=(CLIENT_IP, 50000),
    ) as client:
        yield client


@pytest.fixture
def web(web_env: dict[str, str], smtp_server: SmtpSink) -> Iterator[WebRig]:
    from digestd.service import Service

    service = Service.build(load_settings(web_env))
    with app_client(service) as client:
        rig = WebRig(service, smtp_server, client)
        yield rig
        rig.portal.call(service.transport.close)
    service.engine.dispose()


@pytest.fixture
def admin_log(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What an operator reads: the real log set-up (logfmt, redaction) on stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("logfmt", logging.INFO)
    yield lambda: capsys.readouterr().err
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
