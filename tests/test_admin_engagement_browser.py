"""What the digests sold, in real Chromium against the real app served by uvicorn, with a
week of dailies and their clicks in the database: the Editions page (each edition's clicks,
the week's top stories) and one edition's report with its stories, at 1280 and 375 px.
Screenshots land in ``test-artifacts/engagement-*``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from digestd.config import load_settings
from digestd.service import Service
from tests.admin_live import listening, serving
from tests.admin_seed import TOKEN
from tests.browser import ARTIFACTS, chromium
from tests.engagement_seed import week_of_clicks

NOW = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)


@pytest.fixture
def live(web_env: dict[str, str]) -> Iterator[str]:
    sock = listening()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = Service.build(load_settings({**web_env, "DIGESTD_BASE_URL": base}))
    with service.sessions.begin() as session:
        week_of_clicks(session, NOW)
    try:
        with serving(service, sock, NOW) as url:
            yield url
    finally:
        service.engine.dispose()


def _no_sideways_overflow(page: object) -> bool:
    return page.evaluate("document.documentElement.scrollWidth > window.innerWidth") is False  # type: ignore[attr-defined]


def test_the_newsroom_reads_the_week_and_an_edition(live: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{live}/admin")
        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Operations").wait_for()
        assert page.get_by_role("img", name="Clicks on stories per UTC day").is_visible()
        page.get_by_role("link", name="Editions").first.click()
        page.get_by_role("heading", name="Top stories this week").wait_for()

        top = page.locator("#top-stories tbody tr")
        assert top.count() == 10
        cells = top.locator("td:nth-child(4)").all_inner_texts()
        uniques = [int(t.replace(",", "")) for t in cells]
        assert uniques == sorted(uniques, reverse=True) and uniques[0] > 0
        newest = page.locator("ul.edition-list li").first
        assert "daily 2026-11-29" in newest.inner_text()
        assert "240 sent" in newest.inner_text() and "click-through" in newest.inner_text()
        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(
                path=str(ARTIFACTS / f"engagement-editions-{width}.png"), full_page=True
            )
            assert _no_sideways_overflow(page)

        page.set_viewport_size({"width": 1280, "height": 900})
        newest.get_by_role("link", name="daily 2026-11-29").click()
        page.get_by_role("heading", name="Daily of 2026-11-29").wait_for()
        assert page.locator("#stories tbody tr").count() == 10
        assert "Click-through" in page.locator("dl.report").inner_text()
        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(ARTIFACTS / f"engagement-edition-{width}.png"), full_page=True)
            assert _no_sideways_overflow(page)
