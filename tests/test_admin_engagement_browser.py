"""The engagement pages in real Chromium against the real app served by uvicorn, with a week
of dailies and their clicks in the database: the top stories of the week, the editions, one
edition's stories, at 1280 and 375 px. Screenshots land in ``test-artifacts/engagement-*``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn

from digestd.config import load_settings
from digestd.service import Service
from digestd.web.app import create_app
from tests.admin_seed import TOKEN
from tests.browser import ARTIFACTS, chromium
from tests.engagement_seed import week_of_clicks
from tests.test_admin_browser import WAIT_S, _ThreadServer

NOW = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)


@pytest.fixture
def live(web_env: dict[str, str]) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = Service.build(load_settings({**web_env, "DIGESTD_BASE_URL": base}))
    with service.sessions.begin() as session:
        week_of_clicks(session, NOW)
    config = uvicorn.Config(
        create_app(service, clock=lambda: NOW),
        host="127.0.0.1",
        port=sock.getsockname()[1],
        log_level="warning",
        lifespan="off",
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()
        service.engine.dispose()


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
        page.get_by_role("link", name="Engagement").click()
        page.get_by_role("heading", name="Top stories this week").wait_for()

        top = page.locator("#top-stories tbody tr")
        assert top.count() == 10
        uniques = [
            int(t.replace(",", "")) for t in top.locator("td:nth-child(4)").all_inner_texts()
        ]
        assert uniques == sorted(uniques, reverse=True) and uniques[0] > 0
        editions = page.locator("#editions tbody tr")
        assert editions.count() == 7
        newest = editions.first.locator("td").all_inner_texts()
        assert newest[0] == "Daily 2026-11-29" and newest[1] == "240"  # sent
        assert newest[7].endswith("%")  # click-through rate
        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(ARTIFACTS / f"engagement-{width}.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
            assert overflow is False

        page.set_viewport_size({"width": 1280, "height": 900})
        editions.first.get_by_role("link").click()
        page.get_by_role("heading", name="Daily 2026-11-29").wait_for()
        stories = page.locator("#stories tbody tr")
        assert stories.count() == 10
        total = page.locator("#edition tbody tr td").all_inner_texts()
        assert total[:2] == ["All stories", "240"]
        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(ARTIFACTS / f"engagement-edition-{width}.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
            assert overflow is False
