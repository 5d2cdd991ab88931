"""``HEAD`` changes state nowhere (SPEC §6): link checkers and mail scanners send it to every
link they find. Every route of the app, found by walking ``app.routes`` (so a new route is
covered the day it is added), gets a HEAD with valid tokens and credentials; afterwards
every table holds exactly what it held and no mail has left.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.content.feeds import register_feed
from digestd.models import Base, Digest, Edition, Subscriber
from digestd.service import Service
from digestd.tokens import Purpose
from digestd.web.app import create_app
from tests.helpers import SAMPLE_ARTICLE, article
from tests.web_helpers import SIGNUP, csrf_of, links_in

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
TOKEN = "head-test-admin-token-8Qw3Zr5Tn1Vb"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_PARAMETERS = (
    "subscriber:id",
    "edition:id",
    "digest:id",
    "feed:id",
    "article:path",
    "job",
)


@pytest.fixture
def service(env: dict[str, str]) -> Iterator[Service]:
    # No SMTP: the mail catcher, so /dev/mail is among the routes and mail stays countable.
    service = Service.build(load_settings({**env, "DIGESTD_ADMIN_TOKEN": TOKEN}))
    yield service
    service.engine.dispose()


def _paths(routes: list[BaseRoute], prefix: str = "") -> Iterator[str]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _paths(list(route.routes), prefix + route.path)
        else:
            assert isinstance(route, Route), route
            yield prefix + route.path


def _dump(service: Service) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (sorted), and the mail that left."""
    with service.sessions() as session:
        tables = {
            table.name: sorted((tuple(row) for row in session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }
    mail_dir = service.settings.mail_dir
    tables["(mail)"] = sorted((p.name, p.stat().st_size) for p in mail_dir.glob("*"))
    return tables


def _mail(mail_dir: Path, to: str) -> bytes:
    found = [p for p in mail_dir.glob("*.eml") if to.encode() in p.read_bytes()]
    return max(found, key=lambda p: p.stat().st_mtime_ns).read_bytes()


def _a_reader_of_every_kind(client: TestClient, service: Service) -> dict[str, str]:
    """A pending reader (confirm link), a reader sent a daily (unsubscribe, preferences, view
    and mute links), a signed-in operator; returns a value for each path parameter."""
    items = [
        dict(SAMPLE_ARTICLE, published_at="2026-11-29T08:00:00Z"),
        article("robots-1", "robotics", datetime(2026, 11, 29, 8, tzinfo=UTC), score=3),
        # In the 29th's daily in UTC (the archive's zone), before the reader's in Paris.
        article("archived-1", "ai", datetime(2026, 11, 29, 5, tzinfo=UTC), score=1),
    ]
    assert client.post("/api/articles", json=items, headers=ADMIN).status_code == 200
    mail_dir = service.settings.mail_dir
    for email in ("sent@example.com", "pending@example.com"):
        page = client.get("/subscribe")
        client.post("/subscribe", data={**SIGNUP, "csrf": csrf_of(page.text), "email": email})
    client.get(links_in(_mail(mail_dir, "sent@example.com"))["confirm"])
    assert client.portal is not None
    client.portal.call(service.tick, datetime(2026, 11, 30, 6, 0, tzinfo=UTC))
    sent = _mail(mail_dir, "sent@example.com")
    digest = links_in(sent)
    assert set(digest) >= {"unsubscribe", "preferences", "view", "mute"}, digest
    tracked = re.search(rb"https://digest\.example\.com/c/([0-9A-Za-z._-]+)", sent)
    assert tracked is not None  # an article's link (quoted-printable leaves it whole)
    login = client.get("/admin")
    signed_in = client.post("/admin/login", data={"csrf": csrf_of(login.text), "token": TOKEN})
    assert signed_in.status_code == 303
    confirm = links_in(_mail(mail_dir, "pending@example.com"))["confirm"]
    links = {**digest, "confirm": confirm}
    return {
        **{f"/{kind}/": links[kind].rsplit("/", 1)[1] for kind in links},
        "/c/": tracked.group(1).decode(),
        "/engage/": service.tokens.make(Purpose.ENGAGE, _public_id(service, "sent@example.com"))
        + "?choice=keep",
        "id": "1",  # the first edition
        **_admin_values(service),
        "name": sorted(p.name for p in mail_dir.glob("*.eml"))[0],
        # The public archive's AI daily of the 29th, published by the tick.
        "category": "ai",
        "kind": "daily",
        "date": "2026-11-29",
    }


def _public_id(service: Service, email: str) -> str:
    with service.sessions() as session:
        found = session.scalar(select(Subscriber.public_id).where(Subscriber.email == email))
    assert found is not None
    return found


def _admin_values(service: Service) -> dict[str, str]:
    """The admin pages' parameters: the sent reader, their edition and digest, an article,
    a feed (registered without a fetch: no network), an import job that is not there."""
    with service.sessions.begin() as session:
        feed = register_feed(session, "https://feeds.example.com/ai.xml", "ai", NOW)
        session.flush()
        return {
            "subscriber:id": str(
                session.scalar(select(Subscriber.id).where(Subscriber.email == "sent@example.com"))
            ),
            "edition:id": str(session.scalar(select(func.min(Edition.id)))),
            "digest:id": str(session.scalar(select(func.min(Digest.id)))),
            "feed:id": str(feed.id),
            "article:path": "robots-1",
            "job": "no-such-import",
        }


def _concrete(path: str, values: dict[str, str]) -> str:
    """The route's path with a valid value for each parameter: a token of the route's own
    purpose (by the path before the parameter), a caught message's name, an archive edition."""
    prefix = path.split("{", 1)[0]
    path = path.replace("{token}", values.get(prefix, "{token}"))
    for name in ("name", "category", "kind", "date", "id", *ADMIN_PARAMETERS):
        path = path.replace(f"{{{name}}}", values[name])
    assert "{" not in path, f"{path}: no test value for this parameter yet"
    return path


LOOPBACK = ("127.0.0.1", 50000)


def test_head_on_every_route_changes_nothing_and_sends_nothing(service: Service) -> None:
    app = create_app(service)
    with (
        time_machine.travel(NOW, tick=False) as clock,
        TestClient(
            app, base_url="https://digest.example.com", follow_redirects=False, client=LOOPBACK
        ) as client,
    ):
        values = _a_reader_of_every_kind(client, service)
        clock.move_to(NOW + timedelta(days=2))  # every link still valid, the confirm too
        paths = sorted(set(_paths(list(app.routes))))
        for expected in ("/confirm/{token}", "/dev/mail/{name}", "/api/editions/trigger"):
            assert expected in paths  # the walk sees mounted and optional routes
        before = _dump(service)
        answers = {}
        for path in paths:
            concrete = _concrete(path, values)
            if path.startswith("/dev/mail"):  # this machine's own, by a loopback name
                concrete = f"http://localhost:8080{concrete}"
            answer = client.head(concrete, headers=ADMIN)
            answers[path] = answer.status_code
            assert answer.content == b"", path
            assert answer.status_code < 500, (path, answer.status_code)
        assert _dump(service) == before
    # The HEADs reached real pages with valid credentials, not only error pages.
    for path in (
        "/confirm/{token}",
        "/unsubscribe/{token}",
        "/preferences/{token}",
        "/mute/{token}",
        "/engage/{token}",
        "/api/engagement/editions/{id}",
        "/admin",
        "/admin/subscribers/{subscriber:id}",
        "/admin/articles",
        "/admin/feeds",
        "/admin/editions",
        "/admin/editions/{edition:id}",
        "/admin/digests/{digest:id}",
    ):
        assert answers[path] == 200, (path, answers[path])
    assert answers["/view/{token}"] == 200 and answers["/api/stats"] == 200
    assert answers["/dev/mail/{name}"] == 200
    for path in paths:
        if path.startswith("/archive"):
            assert answers[path] == 200, (path, answers[path])
    assert answers["/c/{token}"] == 303  # redirected, not recorded
    assert answers["/api/editions/trigger"] == 405  # POST-only routes refuse HEAD
    pending = [row for row in before["subscribers"] if "pending@example.com" in row]
    assert len(pending) == 1 and "pending" in pending[0]  # still not confirmed
