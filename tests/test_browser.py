"""The reader's whole journey in real Chromium against the real app served by uvicorn:
signup page prefilled from a link, confirmation email over real SMTP, preferences,
unsubscribe button. Screenshots land in ``test-artifacts/`` for a human to look at.

Debian's Chromium is driven by Playwright; no browser is ever downloaded.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Page

from digestd.config import load_settings
from digestd.models import SubscriberStatus
from digestd.service import Service
from digestd.web.app import create_app
from tests.browser import ARTIFACTS, chromium
from tests.conftest import AppRig, SmtpSink
from tests.helpers import parse, parts

WAIT_S = 10.0


class _ThreadServer(uvicorn.Server):
    """uvicorn in a thread: no signal handlers (only the main thread may install them)."""

    def install_signal_handlers(self) -> None:
        return None


@pytest.fixture
def live(web_env: dict[str, str], smtp_server: SmtpSink) -> Iterator[tuple[str, AppRig]]:
    # Listening before the server thread starts: the browser's first request just queues.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    service = Service.build(load_settings({**web_env, "DIGESTD_BASE_URL": base}))
    config = uvicorn.Config(
        create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield base, AppRig(service, smtp_server)
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()
        service.engine.dispose()


def _shots(page: Page, name: str) -> None:
    for width in (375, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)


def test_reader_subscribes_confirms_changes_preferences_and_unsubscribes(
    live: tuple[str, AppRig],
) -> None:
    base, rig = live
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(
            timezone_id="Asia/Kolkata", viewport={"width": 1280, "height": 900}
        )
        page = context.new_page()
        page.goto(f"{base}/subscribe?categories=ai,robotics&frequency=daily")
        assert page.is_checked("input.cat[value=ai]")
        assert page.is_checked("input.cat[value=robotics]")
        assert not page.is_checked("input.cat[value=fintech]")
        assert page.is_checked("input[name=frequency][value=daily]")
        # the browser's zone, from the Intl API (Chromium's ICU says Asia/Calcutta)
        assert page.input_value("#timezone") == "Asia/Kolkata"
        assert page.get_by_label("Your email").is_visible()
        _shots(page, "signup")

        page.set_viewport_size({"width": 1280, "height": 900})
        page.get_by_label("Your email").fill("reader@example.com")
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
        # The signup's work runs after the answer; its email is its last step.
        text, _ = parts(parse(rig.smtp.wait_for(1)[0].data))
        reader = rig.subscriber("reader@example.com")
        assert reader is not None
        assert reader.status == SubscriberStatus.PENDING
        assert reader.category_slugs == ["ai", "robotics"]
        assert reader.timezone == "Asia/Kolkata"  # stored under its current IANA name
        assert reader.consent_at is None  # consent is the click on the emailed link

        confirm = next(w for w in text.split() if w.startswith(f"{base}/confirm/"))
        page.goto(confirm)
        page.get_by_role("heading", name="You're subscribed").wait_for()
        reader = rig.subscriber("reader@example.com")
        assert reader is not None and reader.status == SubscriberStatus.ACTIVE
        assert "frequency=daily" in reader.consent_source
        assert reader.consent_user_agent and "Chrome" in reader.consent_user_agent

        page.get_by_role("link", name="Manage preferences").click()
        page.get_by_role("heading", name="Your digest preferences").wait_for()
        _shots(page, "preferences")
        page.set_viewport_size({"width": 1280, "height": 900})
        page.get_by_label("Robotics").uncheck()
        page.get_by_label("Quantum").check()
        page.get_by_label("Weekly").check()
        page.get_by_role("button", name="Save preferences").click()
        page.get_by_text("Your preferences are saved.").wait_for()
        reader = rig.subscriber("reader@example.com")
        assert reader is not None
        assert reader.category_slugs == ["ai", "quantum"]
        assert (reader.wants_daily, reader.wants_weekly) == (False, True)
        assert reader.status == SubscriberStatus.ACTIVE

        unsubscribe = next(w for w in text.split() if w.startswith(f"{base}/unsubscribe/"))
        page.goto(unsubscribe)
        assert rig.status("reader@example.com") == SubscriberStatus.ACTIVE
        page.get_by_role("button", name="Unsubscribe").click()
        page.get_by_role("heading", name="You're unsubscribed").wait_for()
        assert rig.status("reader@example.com") == SubscriberStatus.UNSUBSCRIBED
        _shots(page, "unsubscribed")
