"""The public archive in real Chromium against the real server: the index and an edition
page at 375 and 1280 px (screenshots in test-artifacts/), navigated as a visitor would,
fitting the phone, with tap targets of at least 44 px and nothing fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page

from digestd.config import load_settings
from digestd.planning.archive import publish_due
from digestd.service import Service
from tests.browser import ARTIFACTS, chromium
from tests.email_samples import PROSE, TITLES
from tests.helpers import article
from tests.live_server import LiveServer
from tests.seeding import add_articles

CATEGORIES = ["ai", "robotics", "fintech", "quantum", "ai"]


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[LiveServer]:
    service = Service.build(load_settings(env))
    with service.sessions.begin() as session:
        items = []
        for day in (27, 28, 29, 30):
            for n, title in enumerate(TITLES[:5] + TITLES[6:]):
                published = datetime(2026, 11, day - 1, 9 + n, tzinfo=UTC)
                item = article(
                    f"{day}-{n}",
                    CATEGORIES[n % len(CATEGORIES)],
                    published,
                    score=10 - n,
                    source=f"Source {n % 4}",
                    title=title,
                    why_it_matters=PROSE,
                )
                if n == 0:  # one story in two categories
                    item["categories"] = ["ai", "robotics"]
                items.append(item)
        add_articles(session, items)
    for day in (27, 28, 29, 30):
        now = datetime(2026, 11, day, 8, 5, tzinfo=UTC)
        publish_due(service.sessions, service.policy, service.renderer, "UTC", now)
    with LiveServer(service) as live:
        yield live


def _fits_the_phone(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, (page.url, width, scroll_width)


def _small_targets(page: Page, selector: str) -> list[tuple[str, float]]:
    heights = page.eval_on_selector_all(
        selector,
        "links => links.map(a => [a.textContent.trim(), a.getBoundingClientRect().height])",
    )
    return [(text, height) for text, height in heights if height < 44]


def _shots(page: Page, name: str) -> None:
    for width in (375, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        _fits_the_phone(page, width)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)


def test_a_visitor_reads_the_archive_on_a_phone_and_a_desktop(server: LiveServer) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    elsewhere: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 900})
        page.on(
            "request",
            lambda r: None if r.url.startswith(server.url) else elsewhere.append(r.url),
        )
        page.goto(f"{server.url}/archive")
        page.get_by_role("heading", name="The archive").wait_for()
        assert page.get_by_role("link", name="All Technology", exact=True).is_visible()
        assert _small_targets(page, ".shelves a") == []  # links in prose are exempt
        _shots(page, "archive-index")

        page.set_viewport_size({"width": 375, "height": 900})
        page.get_by_role("link", name="AI", exact=True).click()
        page.get_by_role("heading", name="AI", exact=True).wait_for()
        _shots(page, "archive-shelf")
        page.set_viewport_size({"width": 375, "height": 900})
        page.get_by_role("link", name="Monday 30 November 2026 daily").click()
        page.wait_for_url("**/archive/ai/daily/2026-11-30")
        assert page.title() == "AI daily · Monday 30 November 2026 · Tech Pulse"
        assert _small_targets(page, "nav.archive-nav a") == []
        assert _small_targets(page, "a[href*='/subscribe'], a[href$='/archive/ai']") == []
        _shots(page, "archive-edition")

        page.set_viewport_size({"width": 375, "height": 900})
        nav = page.get_by_role("navigation", name="Archive")
        nav.get_by_role("link", name="← Previous daily").click()
        page.wait_for_url("**/archive/ai/daily/2026-11-29")
        nav.get_by_role("link", name="Next daily →").click()
        page.wait_for_url("**/archive/ai/daily/2026-11-30")
        page.emulate_media(color_scheme="dark")
        nav_link = page.eval_on_selector(".archive-nav a", "a => getComputedStyle(a).color")
        assert nav_link == "rgb(147, 197, 253)"  # the light blue of the dark scheme
        page.screenshot(path=str(ARTIFACTS / "archive-edition-dark-375.png"), full_page=True)
    assert elsewhere == []
    assert all(
        (ARTIFACTS / f"archive-{p}-{w}.png").exists()
        for p in ("index", "edition")
        for w in (375, 1280)
    )
