"""The operations page in real Chromium (Debian's, never a download) against the real app
served by uvicorn, with a month of activity in the database: sign in through the form, look
at the queue and the charts, sign out. Screenshots land in ``test-artifacts/admin-*.png``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from digestd.config import load_settings
from digestd.models import DeliveryStatus
from digestd.service import Service
from tests.admin_live import listening, serving
from tests.admin_seed import TOKEN, delivery, edition, month_of_activity, reader
from tests.browser import ARTIFACTS, chromium

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


@pytest.fixture
def live(web_env: dict[str, str]) -> Iterator[tuple[str, Service, dict[str, int]]]:
    sock = listening()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = Service.build(load_settings({**web_env, "DIGESTD_BASE_URL": base}))
    with service.sessions.begin() as session:
        totals = month_of_activity(session, NOW, readers=320)
        # Today's weekly for a few readers is still waiting in the queue.
        weekly = edition(session, "weekly", "2026-11-29", NOW.replace(hour=8, minute=0))
        for i in range(3):
            person = reader(session, f"late{i}@example.com", created_at=NOW)
            delivery(session, person, weekly, DeliveryStatus.QUEUED, weekly.created_at)
    try:
        with serving(service, sock, NOW):
            yield base, service, totals
    finally:
        service.engine.dispose()


def test_operator_signs_in_and_sees_the_queue_and_a_month_of_charts(
    live: tuple[str, Service, dict[str, int]],
) -> None:
    base, _, totals = live
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(f"{base}/admin")
        page.get_by_role("heading", name="Operator sign-in").wait_for()
        page.screenshot(path=str(ARTIFACTS / "admin-login-1280.png"))
        page.get_by_label("Admin token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("That is not the admin token.").wait_for()

        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Operations").wait_for()
        cookie = next(c for c in context.cookies() if c["name"] == "digestd_admin")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"

        # Six charts (two of clicks), each an accessible image whose summary states its total.
        charts = page.get_by_role("img")
        assert charts.count() == 6
        sent = page.get_by_role("img", name="Sent per UTC day")
        described_by = sent.get_attribute("aria-describedby")
        summary = page.locator(f"#{described_by}").text_content() or ""
        assert summary.startswith(f"{totals['sent']:,} emails sent over 30 days; most on Nov ")
        assert page.locator("svg.c-sent rect.bar").count() == 30
        box = sent.bounding_box()
        assert box is not None and box["width"] > 400 and box["height"] > 180
        assert page.get_by_text("Each bar is one UTC day").is_visible()
        assert page.locator(".tile", has_text="Queued").inner_text().split()[:2] == ["QUEUED", "3"]
        assert "oldest due 1 h 30 min ago" in page.locator(".tile", has_text="Queued").inner_text()
        assert "Last weekly 2026-11-29" in page.locator(".editions").inner_text()
        # Nothing blocked by the CSP, no script errors (the favicon's 404 and the wrong
        # token's 401 are expected resource errors).
        assert [e for e in errors if "Failed to load resource" not in e] == []

        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(ARTIFACTS / f"admin-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert overflow is False  # nothing sticks out sideways on a phone
        page.emulate_media(color_scheme="dark")
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(ARTIFACTS / "admin-dark-1280.png"), full_page=True)

        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Operator sign-in").wait_for()
        assert not [c for c in context.cookies() if c["name"] == "digestd_admin"]
