"""axe-core's rules over every page a reader or an operator sees and over the emails, in
real Chromium (Debian's, never a download): a second opinion beside the hand-written
measures of test_accessibility_browser. Each page is audited as it stands in the light and
the dark colour scheme, at a desktop width and on a 375 px phone; a failure names the page,
the scheme, the width, axe's rule and the elements. The app is served by uvicorn with a
frozen clock, after the daemon's tick has sent real dailies and published the archive."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy.orm import Session

from digestd.config import load_settings
from digestd.mail.render import Renderer
from digestd.models import EditionKind, SubscriberStatus
from digestd.readers.subscribers import reschedule
from digestd.service import Service
from digestd.tokens import Purpose
from tests.admin_seed import TOKEN, reader
from tests.axe import Violation, at_least, audit
from tests.browser import chromium, ticks
from tests.conftest import SmtpSink, WebRig
from tests.email_samples import sample_context, typical_context
from tests.helpers import article, parse, parts
from tests.live_server import LiveServer
from tests.seeding import add_articles
from tests.web_helpers import links_in, signup_form

TUESDAY = datetime(2026, 12, 1, tzinfo=UTC)
SENT = TUESDAY.replace(hour=7, minute=5)  # the daily of 07:00 UTC has gone out
MODES = (("light", 1280), ("dark", 1280), ("light", 375), ("dark", 375))
NOW = SENT + timedelta(minutes=25)  # the web app's frozen clock
READERS = {  # address: categories, status
    "ann@example.com": ("ai,robotics", SubscriberStatus.ACTIVE),
    "pat@example.com": ("ai,robotics", SubscriberStatus.PAUSED),
    "weekly@example.com": ("ai,robotics", SubscriberStatus.ACTIVE),
    "pause@example.com": ("ai,robotics", SubscriberStatus.ACTIVE),
    "topics@example.com": ("ai,robotics,quantum", SubscriberStatus.ACTIVE),
}


@dataclass
class Site:
    base: str
    smtp: SmtpSink
    links: dict[str, str]  # a reader's own pages, by name
    page: Page
    found: list[Violation] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def check(self, name: str) -> None:
        """Audit the page as it stands in every colour scheme and width, every <details>
        open (axe skips what is not rendered)."""
        self.page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        for scheme, width in MODES:
            self.page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            self.page.set_viewport_size({"width": width, "height": 900})
            self.found += audit(self.page, f"{name} [{scheme}, {width} px]")
        self.page.emulate_media(color_scheme="light")
        self.page.set_viewport_size({"width": 1280, "height": 900})


def _articles() -> list[dict[str, Any]]:
    items = []
    moment = TUESDAY - timedelta(days=7)
    while moment < TUESDAY + timedelta(hours=7):
        for n, category in enumerate(("ai", "robotics", "quantum")):
            key = f"{category}-{moment:%m%d%H}"
            items.append(article(key, category, moment, score=5 - n, source=f"Wire {key}"))
        moment += timedelta(hours=6)
    return items


def _seed(session: Session, service: Service) -> dict[str, str]:
    add_articles(session, _articles())
    links = {}
    settings = service.settings
    for email, (categories, status) in READERS.items():
        person = reader(session, email, categories=categories, created_at=TUESDAY - timedelta(9))
        person.status = status
        if status is SubscriberStatus.PAUSED:
            person.paused_until = TUESDAY + timedelta(days=14)
        reschedule(person, TUESDAY, settings.daily_time, settings.weekly_time)
        name = email.split("@")[0]
        for purpose in (Purpose.PREFERENCES, Purpose.UNSUBSCRIBE, Purpose.ENGAGE):
            links[f"{name}-{purpose}"] = (
                f"/{purpose}/{service.tokens.make(purpose, person.public_id)}"
            )
        links[f"{name}-id"] = str(person.id)
    return links


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as started:
        yield started


@pytest.fixture
def site(web_env: dict[str, str], smtp_server: SmtpSink, browser: Browser) -> Iterator[Site]:
    service = Service.build(load_settings(web_env))
    with service.sessions.begin() as session:
        links = _seed(session, service)
    ticks(web_env, SENT)
    daily = next(m for m in smtp_server.messages if m.recipients == ["ann@example.com"])
    links.update({k: v for k, v in links_in(daily.data).items() if k in ("view", "mute")})
    with LiveServer(service, clock=lambda: NOW) as server:
        context = browser.new_context()
        yield Site(server.url, smtp_server, links, context.new_page())
        context.close()
    service.engine.dispose()


def _report(found: list[Violation]) -> str:
    return "\n".join(str(v) for v in found)


# --- the reader's pages -------------------------------------------------------------------


def _signup(site: Site) -> None:
    site.goto("/subscribe")
    site.check("signup")
    site.goto("/subscribe?categories=ai,robotics&frequency=both")
    site.page.get_by_text("· change").click()  # the 26 topic tiles open
    site.check("signup, topics prefilled and opened")
    site.page.get_by_role("button", name="Subscribe").click()  # no address
    site.page.locator("#email-error").wait_for()
    site.check("signup refused")
    site.page.get_by_label("Your email").fill("new@example.com")
    site.page.get_by_role("button", name="Subscribe").click()
    site.page.get_by_role("heading", name="Check your inbox").wait_for()
    site.check("check your inbox")
    confirm = links_in(site.smtp.wait_for(2)[-1].data)["confirm"]
    site.goto(confirm)
    site.page.get_by_role("heading", name="You're subscribed").wait_for()
    site.check("confirmed")


def _unsubscribe_and_instead(site: Site) -> None:
    site.goto(site.links["ann-unsubscribe"])
    site.check("unsubscribe")
    site.page.get_by_role("button", name="Unsubscribe", exact=True).click()
    site.page.wait_for_load_state()
    site.check("unsubscribed")
    site.page.get_by_role("link", name="Changed your mind?").click()
    site.page.wait_for_load_state()
    site.check("unsubscribed, changed their mind")
    site.page.get_by_role("button", name="Email me a link to subscribe again").click()
    site.page.wait_for_load_state()
    site.check("resubscribing")
    site.goto(site.links["pat-unsubscribe"])
    site.check("unsubscribe, paused")
    site.goto(site.links["weekly-unsubscribe"])
    site.page.get_by_role("button", name="Weekly recap instead").click()
    site.page.wait_for_load_state()
    site.check("weekly recap instead")
    site.goto(site.links["pause-unsubscribe"])
    site.page.evaluate("document.querySelectorAll('[name=pause_for]').forEach(b => b.checked = 0)")
    site.page.get_by_role("button", name="Pause for a while").click()  # no length chosen
    site.page.wait_for_load_state()
    site.check("unsubscribe, a pause refused")
    site.page.locator("input[name=pause_for]").first.check()
    site.page.get_by_role("button", name="Pause for a while").click()
    site.page.wait_for_load_state()
    site.check("paused instead")
    site.goto(site.links["topics-unsubscribe"])
    site.page.locator("input[name=keep][value=quantum]").uncheck()
    site.page.get_by_role("button", name="Fewer topics").click()
    site.page.wait_for_load_state()
    site.check("fewer topics instead")


def _preferences(site: Site) -> None:
    page = site.page
    site.goto(site.links["ann-preferences"])
    site.check("preferences")
    page.get_by_role("button", name="Save preferences").click()
    page.wait_for_load_state()
    site.check("preferences saved")
    page.get_by_role("button", name="Delete my data").click()  # the box not ticked
    page.wait_for_load_state()
    site.check("preferences, deletion refused")
    site.goto(site.links["pat-preferences"])
    site.check("preferences, paused")
    site.goto(site.links["mute"])
    site.check("mute a topic")
    page.locator("main form button").first.click()
    page.wait_for_load_state()
    site.check("topic muted")


@pytest.mark.slow  # ~25 pages, four audits each: ~25 s
def test_reader_pages_pass_axe(site: Site) -> None:
    _signup(site)
    _preferences(site)
    site.goto(site.links["view"])
    site.check("view in browser")
    site.goto("/preferences/not-a-token")
    site.check("invalid link")
    site.goto("/no-such-page")
    site.check("not found")
    site.goto(site.links["ann-engage"] + "?choice=weekly")
    site.check("a sunset email's answer")
    for path in ("/archive", "/archive/ai", "/archive/ai/daily/2026-12-01"):
        site.goto(path)
        site.check(path)
    _unsubscribe_and_instead(site)
    bad = at_least(site.found, "moderate")
    assert bad == [], _report(bad)


# --- the operator's pages -----------------------------------------------------------------


@pytest.mark.slow  # ~16 pages, four audits each: ~25 s
def test_admin_pages_pass_axe(site: Site, tmp_path: Path) -> None:
    page = site.page
    site.goto("/admin")
    site.check("admin sign-in")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Operations").wait_for()
    site.check("admin overview")
    reader_page = f"/admin/subscribers/{site.links['ann-id']}"
    for path in (
        "/admin/subscribers",
        reader_page,
        f"{reader_page}/preview?kind=daily",
        "/admin/articles",
        "/admin/feeds",
        "/admin/editions",
    ):
        site.goto(path)
        site.check(path)
    page.locator("ul.edition-list li > a").first.click()
    page.wait_for_load_state()
    site.check("an edition's report")
    page.locator("a[href^='/admin/digests/']").first.click()
    page.wait_for_load_state()
    site.check("a digest")
    site.goto("/admin/import")
    site.check("/admin/import")
    upload = tmp_path / "readers.csv"
    upload.write_text("email,categories,frequency,timezone\nzoe@example.com,ai,daily,UTC\nbad,,,\n")
    page.locator("#file").set_input_files(upload)
    page.get_by_role("button", name="Import").click()
    page.wait_for_load_state()
    site.check("an import's report")
    site.goto(reader_page)
    page.locator("#confirm_email").fill("someone.else@example.com")
    page.get_by_role("button", name="Erase this reader").click()
    page.wait_for_load_state()
    site.check("a reader, erasure refused")
    site.goto("/admin/editions")
    page.locator("#preview-email").fill("nobody@example.com")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_load_state()
    site.check("/admin/editions, preview refused")
    site.goto("/admin/feeds")
    page.get_by_label("Feed URL").fill("ftp://example.com/feed.xml")
    page.get_by_role("button", name="Fetch and add").click()
    page.wait_for_load_state()
    site.check("/admin/feeds, a URL refused")
    bad = at_least(site.found, "moderate")
    assert bad == [], _report(bad)


# --- the emails ---------------------------------------------------------------------------


def _emails(web: WebRig) -> dict[str, str]:
    renderer = Renderer()
    emails = {
        "daily": renderer.render("daily", typical_context(EditionKind.DAILY, 10)).html,
        "weekly": renderer.render("weekly", typical_context(EditionKind.WEEKLY, 15)).html,
        "weekly, long fields": renderer.render(
            "weekly", sample_context(EditionKind.WEEKLY, 15)
        ).html,
    }
    signup_form(web, "ann@example.com")
    emails["confirmation"] = parts(parse(web.smtp.messages[-1].data))[1]
    assert web.client.get(links_in(web.smtp.messages[-1].data)["confirm"]).status_code == 200
    emails["welcome"] = parts(parse(web.smtp.messages[-1].data))[1]
    return emails


# Rules about a whole document that an email is not: a mail client shows the message inside
# its own page, which has the landmarks and names the message by its subject. A <main> in
# the message would be a second main landmark there, and the message's headings start at
# h2 for the same reason (the web copies, audited as pages above, add the <main> and h1).
NOT_FOR_EMAIL = ("region", "landmark-one-main", "page-has-heading-one")


@pytest.mark.slow  # five emails, four audits each: ~25 s
def test_emails_pass_axe(web: WebRig, browser: Browser) -> None:
    found: list[Violation] = []
    for name, html in _emails(web).items():
        for scheme, width in (("light", 600), ("dark", 600), ("light", 375), ("dark", 375)):
            page = browser.new_page(
                viewport={"width": width, "height": 900},
                color_scheme=scheme,  # type: ignore[arg-type]
            )
            page.route("**/*", lambda route: route.abort())  # an email fetches nothing
            page.set_content(html)
            found += audit(page, f"{name} email [{scheme}, {width} px]", NOT_FOR_EMAIL)
            page.close()
    bad = at_least(found, "moderate")
    assert bad == [], _report(bad)
