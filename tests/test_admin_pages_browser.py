"""The admin pages that act, in real Chromium (Debian's, never a download) against the real
app served by uvicorn, mailing through a real SMTP server (aiosmtpd), with two dailies
planned and sent by the real tick, articles and feeds. Each action is taken through the
page's own form and the stored state is read back from the database after it.
Screenshots at 375 and 1280 px land in ``test-artifacts/admin-<page>-<width>.png``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import load_settings
from digestd.content.articles import ingest
from digestd.content.feeds import register_feed
from digestd.models import Article, Delivery, Feed, Subscriber, SubscriberStatus
from digestd.service import Service
from tests.admin_live import listening, serving
from tests.admin_seed import TOKEN, reader
from tests.browser import ARTIFACTS, chromium
from tests.conftest import SmtpSink
from tests.feed_server import FeedServer
from tests.feed_server import serving as serving_feeds
from tests.helpers import article, parse

NOW = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)  # a Wednesday, before today's 07:00 daily
TODAY = NOW.replace(hour=7, minute=0)
CATEGORIES = ("ai", "robotics", "quantum", "fintech")
READERS = 24


@dataclass
class Console:
    base: str
    sessions: sessionmaker[Session]
    smtp: SmtpSink
    feeds: FeedServer


def _seed_and_send(settings_env: dict[str, str], feeds: FeedServer) -> None:
    """Articles over three days, readers of every category, three feeds; the dailies of the
    last two days planned and sent by the real tick (one reader refused by the server)."""
    import asyncio

    service = Service.build(load_settings(settings_env))
    items = [
        article(
            f"story-{day}-{i}",
            CATEGORIES[i % len(CATEGORIES)],
            TODAY - timedelta(days=day, hours=i % 20 + 1),
            score=10 - i % 7,
            source=f"Source {i % 5}",
        )
        for day in range(3)
        for i in range(12)
    ]
    with service.sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors
        for i in range(READERS):
            person = reader(
                session,
                f"reader{i:02d}@example.com" if i else "refused@example.com",
                categories=",".join(CATEGORIES[: 1 + i % 3]),
                created_at=NOW - timedelta(days=9),
            )
            person.next_daily_at = TODAY - timedelta(days=2)
        for name, category in (("rss.xml", "robotics"), ("atom.xml", "quantum")):
            register_feed(session, feeds.url(name), category, NOW)

    async def two_dailies() -> None:
        try:
            for back in (2, 1):
                await service.tick(TODAY - timedelta(days=back, minutes=-1))
        finally:
            await service.close()

    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, two_dailies()).result()


@pytest.fixture
def console(web_env: dict[str, str], smtp_server: SmtpSink) -> Iterator[Console]:
    sock = listening()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {**web_env, "DIGESTD_BASE_URL": base}
    smtp_server.reject["refused@example.com"] = "550 5.1.1 <refused@example.com>: no mailbox"
    with serving_feeds() as feeds:
        _seed_and_send(env, feeds)
        smtp_server.messages.clear()
        service = Service.build(load_settings(env))
        try:
            with serving(service, sock, NOW):
                yield Console(base, service.sessions, smtp_server, feeds)
        finally:
            service.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (it takes seconds to start); a fresh context per test."""
    with chromium() as started:
        yield started


@pytest.fixture
def page(console: Console, browser: Browser) -> Iterator[Page]:
    """A signed-in operator's tab; no script errors and nothing blocked by the CSP."""
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.goto(f"{console.base}/admin")
    tab.get_by_label("Admin token").fill(TOKEN)
    tab.get_by_role("button", name="Sign in").click()
    tab.get_by_role("heading", name="Operations").wait_for()
    yield tab
    context.close()
    assert [e for e in errors if "Failed to load resource" not in e] == []


def _shoot(page: Page, name: str) -> None:
    """Screenshots at 1280 and 375 px; on a phone nothing sticks out sideways."""
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"admin-{name}-{width}.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert overflow is False, f"{name} is wider than a 375 px screen"
    page.set_viewport_size({"width": 1280, "height": 900})


def _read(console: Console, query: Callable[[Session], object]) -> object:
    with console.sessions() as session:
        return query(session)


def _subscriber(console: Console, email: str) -> Subscriber:
    def find(session: Session) -> Subscriber:
        found = session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None
        session.expunge(found)
        return found

    found = _read(console, find)
    assert isinstance(found, Subscriber)
    return found


def test_navigation_links_every_admin_page_from_the_dashboard(console: Console, page: Page) -> None:
    nav = page.get_by_role("navigation", name="Operations")
    for label, heading in (
        ("Subscribers", "Subscribers"),
        ("Articles", "Articles"),
        ("Feeds", "Feeds"),
        ("Editions", "Editions"),
        ("Overview", "Operations"),
    ):
        nav.get_by_role("link", name=label).click()
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        expect(nav.get_by_role("link", name=label)).to_have_attribute("aria-current", "page")
    _shoot(page, "overview")


def test_subscribers_search_unsubscribe_and_import_from_the_page(
    console: Console, page: Page
) -> None:
    page.goto(f"{console.base}/admin/subscribers")
    page.get_by_label("Address contains").fill("reader01")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="reader01@example.com").click()
    page.get_by_role("heading", name="reader01@example.com").wait_for()
    _shoot(page, "reader")
    page.get_by_role("button", name="Unsubscribe", exact=True).click()
    page.get_by_text("Unsubscribed: no more digests").wait_for()
    gone = _subscriber(console, "reader01@example.com")
    assert gone.status == SubscriberStatus.UNSUBSCRIBED and gone.next_daily_at is None

    page.goto(f"{console.base}/admin/import")
    csv = "email,categories,frequency,timezone\nnew1@example.com,ai,daily,Europe/Paris\n"
    csv += "not-an-address,ai,daily,UTC\nnew2@example.com,quantum,weekly,\n"
    page.get_by_label("CSV file").set_input_files(
        {"name": "readers.csv", "mimeType": "text/csv", "buffer": csv.encode()}
    )
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-state")).to_contain_text("Done: 3 lines read", timeout=10_000)
    assert page.locator("#added").inner_text() == "2"
    assert page.locator("#rejected").inner_text() == "1"
    expect(page.locator("table.rejected")).to_contain_text("email")
    _shoot(page, "import")
    new1 = _subscriber(console, "new1@example.com")
    assert new1.status == SubscriberStatus.ACTIVE and new1.timezone == "Europe/Paris"
    assert _subscriber(console, "new2@example.com").wants_weekly


def test_articles_pin_and_hold(console: Console, page: Page) -> None:
    page.goto(f"{console.base}/admin/articles")
    page.get_by_label("Category").select_option("quantum")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("li[data-article]")
    expect(rows.first).to_contain_text("quantum")
    first = rows.first.get_attribute("data-article")
    second = rows.nth(1).get_attribute("data-article")
    assert first and second
    _shoot(page, "articles")

    row = page.locator(f'li[data-article="{first}"]')
    row.get_by_label("Pin until (UTC)").fill("2026-12-04T18:00")
    row.get_by_role("button", name="Pin").click()
    page.get_by_text("Pinned: it leads every edition").wait_for()
    expect(page.locator(f'li[data-article="{first}"]')).to_contain_text(
        "pinned until 2026-12-04 18:00 UTC"
    )
    assert page.get_by_label("Category").input_value() == "quantum"  # the same list
    page.locator(f'li[data-article="{second}"]').get_by_role("button", name="Hold").click()
    page.get_by_text("Held: it goes in no edition").wait_for()
    _shoot(page, "articles-acted")

    def standing(session: Session) -> dict[str, tuple[datetime | None, bool]]:
        rows = session.execute(select(Article.id, Article.pinned_until, Article.held))
        return {a: (p.astimezone(UTC) if p else None, h) for a, p, h in rows if p or h}

    assert _read(console, standing) == {
        first: (datetime(2026, 12, 4, 18, 0, tzinfo=UTC), False),
        second: (None, True),
    }


def test_feeds_add_refused_add_poll_and_remove(console: Console, page: Page) -> None:
    page.goto(f"{console.base}/admin/feeds")
    expect(page.locator("li[data-feed]")).to_have_count(2)
    url = console.feeds.url("notafeed.html")
    page.get_by_label("Feed URL").fill(url)
    page.get_by_label("Category").select_option("ai")
    page.get_by_role("button", name="Fetch and add").click()
    expect(page.get_by_role("alert")).to_contain_text(f"URL: {url} is not a readable feed")
    assert page.get_by_label("Feed URL").input_value() == url
    assert _read(console, lambda s: s.scalar(select(func.count()).select_from(Feed))) == 2

    page.get_by_label("Feed URL").fill(console.feeds.url("bad_items.xml"))
    page.get_by_label("Category").select_option("fintech")
    page.get_by_role("button", name="Fetch and add").click()
    page.get_by_text("Added: the test fetch found a feed").wait_for()
    added = page.locator("li[data-feed]", has_text="bad_items.xml")
    # The test fetch was its first poll: what it stored and refused is on the row.
    expect(added).to_contain_text("Stored last run1")
    expect(added).to_contain_text("Rejected last run2")
    added.get_by_role("button", name="Poll now").click()
    page.get_by_text("Polled. Articles stored or updated: 0.").wait_for()  # a 304: unchanged
    _shoot(page, "feeds")

    feed_id = page.locator("li[data-feed]", has_text="rss.xml").get_attribute("data-feed")
    page.locator(f'li[data-feed="{feed_id}"]').get_by_role("button", name="Remove").click()
    page.get_by_text("Removed: the feed is no longer polled.").wait_for()

    def feeds(session: Session) -> list[tuple[str, str, int]]:
        rows = session.execute(select(Feed.url, Feed.category, Feed.stored_last_run))
        return sorted((u.rsplit("/", 1)[1], c, n) for u, c, n in rows)

    # bad_items.xml's last run was the 304 of "Poll now": nothing new to store.
    assert _read(console, feeds) == [("atom.xml", "quantum", 0), ("bad_items.xml", "fintech", 0)]


def test_editions_report_preview_and_a_test_send_that_leaves_every_edition_unsent(
    console: Console, page: Page
) -> None:
    def deliveries(session: Session) -> int:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)

    def next_dailies(session: Session) -> dict[str, datetime | None]:
        return dict(session.execute(select(Subscriber.email, Subscriber.next_daily_at)).all())

    before = (_read(console, deliveries), _read(console, next_dailies))
    page.goto(f"{console.base}/admin/editions")
    expect(page.locator("li[data-edition]")).to_have_count(2)
    _shoot(page, "editions")
    page.get_by_role("link", name="daily 2026-11-30").click()
    report = page.locator("dl.report")
    expect(report).to_contain_text(f"Planned{READERS}")
    expect(report).to_contain_text("Failed1")
    expect(page.locator("table.failed")).to_contain_text("550 5.1.1")
    expect(page.locator("table.failed")).not_to_contain_text("refused@example.com")
    _shoot(page, "edition")
    page.locator("table.digests a").first.click()
    page.get_by_text("An operator's copy of this digest").wait_for()

    page.goto(f"{console.base}/admin/editions")
    page.locator("#preview-form").get_by_label("Reader's address").fill("reader02@example.com")
    page.locator("#preview-form").get_by_role("button", name="Preview").click()
    page.get_by_text("An operator's copy of this digest").wait_for()

    page.goto(f"{console.base}/admin/editions")
    form = page.locator("#test-form")
    form.get_by_label("Send to").fill("editor@example.org")
    form.get_by_label("Categories").fill("ai,robotics")
    form.get_by_role("button", name="Send the test").click()
    page.get_by_text("Test message sent to editor@example.org and accepted").wait_for()
    _shoot(page, "editions-tested")
    (mail,) = console.smtp.wait_for(1)
    assert mail.recipients == ["editor@example.org"]
    assert str(parse(mail.data)["Subject"]).startswith("[Test] ")
    # Nobody's edition used up: no queue row written, every reader's next daily unchanged.
    after = (_read(console, deliveries), _read(console, next_dailies))
    assert after == before
    dailies = before[1]
    assert isinstance(dailies, dict) and dailies.pop("refused@example.com") is None  # bounced
    assert set(dailies.values()) == {TODAY}
