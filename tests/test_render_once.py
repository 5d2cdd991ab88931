"""Each distinct digest is rendered once; every recipient's copy is made by substitution."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from digestd.config import Settings, load_settings
from digestd.content.articles import ingest
from digestd.delivery.catcher import MailCatcher
from digestd.mail.render import RenderedEmail, Renderer
from digestd.service import Service
from tests.helpers import article, parse, parts, run_cli
from tests.seeding import Reader, add_articles, add_readers

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


class CountingRenderer(Renderer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def render(self, kind: str, context: dict[str, Any]) -> RenderedEmail:
        self.calls.append(kind)
        return super().render(kind, context)


def test_readers_with_the_same_digest_share_one_render(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    items = [article(f"ai-{i}", "ai", SEND - timedelta(hours=i + 1), score=5 - i) for i in range(4)]
    items += [article("q-0", "quantum", SEND - timedelta(hours=2))]
    (tmp_path / "a.json").write_text(json.dumps(items))
    readers = [f"ai{i}@example.com,ai,daily,UTC" for i in range(5)]
    readers += ["q@example.com,quantum,daily,UTC", 'both@example.com,"ai,quantum",daily,UTC']
    (tmp_path / "r.csv").write_text("email,categories,frequency,timezone\n" + "\n".join(readers))
    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "a.json")) == 0
    with time_machine.travel(SEND - timedelta(days=1), tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "r.csv")) == 0

    settings = load_settings(env)
    service = Service.build(settings, transport=MailCatcher(settings.mail_dir))
    counting = CountingRenderer()
    service.renderer.renderer = counting  # what the planner renders with
    report = asyncio.run(service.tick(SEND))
    asyncio.run(service.close())

    assert report.delivered.sent == 7
    # ai-only, quantum-only, ai+quantum; then the archive's All Technology edition (its AI
    # and Quantum editions are the ai-only and quantum-only readers' digests).
    assert counting.calls == ["daily", "daily", "daily", "daily"]
    assert report.enqueued.rendered == 3 and report.summary().endswith("rendered 3 digests")
    messages = [parse(p.read_bytes()) for p in settings.mail_dir.glob("*.eml")]
    ai_readers = [m for m in messages if str(m["To"]).startswith("ai")]
    texts = [parts(m)[0].split("Manage preferences")[0] for m in ai_readers]
    tracked = re.compile(r"https://digest\.example\.com/c/\S+")
    assert len({tracked.sub("<article link>", text) for text in texts}) == 1  # the same content
    assert len({tuple(tracked.findall(text)) for text in texts}) == 5  # ... its links tracked
    links = {parts(m)[0].split("Unsubscribe:")[1].split()[0] for m in ai_readers}
    assert len(links) == 5  # ... with each reader's own links


def test_a_corrected_article_reaches_the_readers_planned_after_and_a_same_resend_costs_nothing(
    settings: Settings,
) -> None:
    """One edition (one local date), planned zone by zone: Paris at 06:00 UTC, London at
    07:00, the Azores at 08:00. A correction sent after Paris's digest (a re-sent id with
    a new title and URL) is in London's; the same text sent again before the Azores'
    renders nothing more: they share London's digest."""
    story = article("acme", "ai", SEND - timedelta(hours=4), score=5, source="Wire")
    story["title"] = "Acme CEO resigns"
    corrected = {**story, "title": "CORRECTION: Acme CEO stays", "url": FIXED}
    readers = [
        Reader("pia@example.com", "Europe/Paris"),
        Reader("leo@example.com", "Europe/London"),
        Reader("ana@example.com", "Atlantic/Azores"),
    ]
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, [story])
        add_readers(session, readers, SEND - timedelta(days=1))

    def send(item: dict[str, Any]) -> None:
        with service.sessions.begin() as session:
            assert ingest(session, enumerate([item], start=1)).updated == 1

    async def run() -> list[int]:
        rendered = [(await service.tick(SEND - timedelta(hours=1))).enqueued.rendered]
        send(corrected)
        rendered.append((await service.tick(SEND)).enqueued.rendered)
        send(corrected)  # the same text again
        rendered.append((await service.tick(SEND + timedelta(hours=1))).enqueued.rendered)
        await service.close()
        return rendered

    assert asyncio.run(run()) == [1, 1, 0]
    texts = {
        str(m["To"]): parts(m)[0]
        for m in (parse(p.read_bytes()) for p in settings.mail_dir.glob("*.eml"))
    }
    assert "Acme CEO resigns" in texts["pia@example.com"]
    for later in ("leo@example.com", "ana@example.com"):
        assert "CORRECTION: Acme CEO stays" in texts[later]  # (its links are tracked ones)
        assert "Acme CEO resigns" not in texts[later]


FIXED = "https://news.example.com/acme-fixed"


class LockProbingRenderer(Renderer):
    """Tries to take SQLite's write lock from another connection at each render, as the
    sending process's claims and outcomes do, without waiting: whether it could."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.could_write: list[bool] = []

    def render(self, kind: str, context: dict[str, Any]) -> RenderedEmail:
        other = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            self.could_write.append(True)
        except sqlite3.OperationalError:  # "database is locked"
            self.could_write.append(False)
        finally:
            other.close()
        return super().render(kind, context)


def test_the_planner_renders_on_sqlite_without_holding_the_write_lock(
    settings: Settings,
) -> None:
    """SQLite has one writer: a planner rendering inside its write transaction kept the
    sender from claiming and recording for the whole render (most of a big edition's first
    seconds). The edition exists (Paris planned it an hour earlier); London's new digest is
    rendered while anyone may still write."""
    if not settings.database_url.startswith("sqlite:"):
        pytest.skip("SQLite's database-wide write lock; PostgreSQL locks rows")
    items = [article("ai-1", "ai", SEND - timedelta(hours=3)), article("q-1", "quantum", SEND)]
    items[1]["published_at"] = (SEND - timedelta(hours=2)).isoformat()
    readers = [
        Reader("pia@example.com", "Europe/Paris"),
        Reader("leo@example.com", "Europe/London", ("quantum",)),
    ]
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, items)
        add_readers(session, readers, SEND - timedelta(days=1))
    probe = LockProbingRenderer(settings.database_url.removeprefix("sqlite:///"))

    async def run() -> tuple[int, int]:
        paris = (await service.tick(SEND - timedelta(hours=1))).enqueued.rendered
        service.renderer.renderer = probe
        london = (await service.tick(SEND)).enqueued.rendered
        await service.close()
        return paris, london

    assert asyncio.run(run()) == (1, 1)
    assert probe.could_write and all(probe.could_write), probe.could_write
