"""Accessibility of the web pages in real Chromium (Debian's, never a download), measured
from the page itself: contrast from computed colours (WCAG 1.4.3, 1.4.11), nothing wider
than a 375 px phone (1.4.10), a focus ring on every field (2.4.7), a skip link and the
landmarks (2.4.1), headings in order (1.3.1), tap targets (2.5.8), the admin pages'
auto-refresh that waits for the operator (2.2.1), and refused fields that say so and take
the focus (3.3.1). One browser for the module; the app served by uvicorn, frozen clock."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy.orm import Session

from digestd.config import load_settings
from digestd.content.articles import ingest
from digestd.content.feeds import register_feed
from digestd.models import DeliveryStatus
from digestd.service import Service
from digestd.tokens import Purpose
from tests.admin_live import listening, serving
from tests.admin_seed import TOKEN, delivery, edition, reader
from tests.browser import chromium
from tests.helpers import article

NOW = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
# An address with nowhere to break a line: it must still fit a phone.
LONG = "reader.with.a.very.long.address.that.never.breaks@mail.example-company-name.com"
PHONE = {"width": 375, "height": 800}


@dataclass
class Site:
    base: str
    preferences: str  # the long address's preferences page
    unsubscribe: str
    reader_page: str  # its page in /admin
    edition_page: str
    browser: Browser

    def tab(self, scheme: str = "light", width: int = 1280, admin: bool = False) -> Page:
        context = self.browser.new_context(
            color_scheme=scheme,  # type: ignore[arg-type]
            viewport={"width": width, "height": 900},
        )
        tab = context.new_page()
        if admin:
            tab.goto(f"{self.base}/admin")
            tab.get_by_label("Admin token").fill(TOKEN)
            tab.get_by_role("button", name="Sign in").click()
            tab.get_by_role("heading", name="Operations").wait_for()
        return tab


def _seed(session: Session, service: Service) -> dict[str, str]:
    person = reader(session, LONG, categories="ai,robotics", created_at=NOW - timedelta(days=9))
    stories = [article(f"story-{i}", "ai", NOW - timedelta(hours=i + 1)) for i in range(3)]
    assert not ingest(session, enumerate(stories, start=1)).errors
    register_feed(session, "http://127.0.0.1:9/feed.xml", "ai", NOW)
    # A daily still waiting to go out: the admin pages follow it by reloading.
    today = edition(session, "daily", NOW.date().isoformat(), NOW - timedelta(hours=1))
    delivery(session, person, today, DeliveryStatus.QUEUED, NOW - timedelta(minutes=10))
    session.flush()
    tokens = service.tokens
    return {
        "preferences": f"/preferences/{tokens.make(Purpose.PREFERENCES, person.public_id)}",
        "unsubscribe": f"/unsubscribe/{tokens.make(Purpose.UNSUBSCRIBE, person.public_id)}",
        "reader_page": f"/admin/subscribers/{person.id}",
        "edition_page": f"/admin/editions/{today.id}",
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as started:
        yield started


@pytest.fixture
def site(web_env: dict[str, str], browser: Browser) -> Iterator[Site]:
    sock = listening()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = Service.build(load_settings({**web_env, "DIGESTD_BASE_URL": base}))
    with service.sessions.begin() as session:
        paths = _seed(session, service)
    try:
        with serving(service, sock, NOW):
            yield Site(base, browser=browser, **paths)
            for context in browser.contexts:
                context.close()
    finally:
        service.engine.dispose()


# --- measuring ----------------------------------------------------------------------------


def _luminance(rgb: tuple[float, ...]) -> float:
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _rgb(css: str) -> tuple[float, ...]:
    values = tuple(float(n) for n in re.findall(r"[\d.]+", css))
    assert len(values) == 3 or values[3] == 1, f"not an opaque colour: {css}"
    return values[:3]


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two computed CSS colours ("rgb(…)")."""
    high, low = sorted((_luminance(_rgb(a)), _luminance(_rgb(b))), reverse=True)
    return (high + 0.05) / (low + 0.05)


COLOURS = """el => {
  const s = getComputedStyle(el);
  let back = el;  // the first ancestor with a background of its own
  const clear = "rgba(0, 0, 0, 0)";
  while (back && getComputedStyle(back).backgroundColor === clear) back = back.parentElement;
  return [s.color, back ? getComputedStyle(back).backgroundColor : "rgb(255, 255, 255)"];
}"""
RING = """el => { const s = getComputedStyle(el);
  return {style: s.outlineStyle, width: parseFloat(s.outlineWidth), colour: s.outlineColor,
          shadow: s.boxShadow, border: s.borderColor}; }"""


def text_contrast(page: Page, selector: str) -> float:
    fore, back = page.locator(selector).first.evaluate(COLOURS)
    return contrast(fore, back)


def ring(page: Page, selector: str) -> dict[str, Any]:
    found: dict[str, Any] = page.locator(selector).first.evaluate(RING)
    return found


def fits(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def headings(page: Page) -> list[int]:
    levels: list[int] = page.evaluate(
        "[...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => +h.tagName[1])"
    )
    return levels


def focus_reaches(page: Page, element_id: str) -> bool:
    """Whether the element takes the focus: autofocus runs once the answered page has
    loaded, after the click that sent the form returned (so waited for, up to 5 s)."""
    try:
        page.wait_for_function(
            "id => document.activeElement && document.activeElement.id === id",
            arg=element_id,
            timeout=5_000,
        )
    except PlaywrightTimeout:
        return False
    return True


def described_by(page: Page, selector: str) -> str:
    """The text of what a field's aria-describedby names."""
    ids = page.locator(selector).first.get_attribute("aria-describedby") or ""
    return " ".join(page.locator(f"#{i}").inner_text() for i in ids.split())


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_danger_buttons_pills_and_focus_rings_keep_their_contrast(site: Site, scheme: str) -> None:
    page = site.tab(scheme)
    page.goto(site.base + site.preferences)
    assert text_contrast(page, "button.danger") >= 4.5  # "Delete my data"
    assert text_contrast(page, "span.status#status") >= 4.5
    page.locator("#pause_until").focus()
    card = page.locator("main").evaluate("el => getComputedStyle(el).backgroundColor")
    focused = ring(page, "#pause_until")
    assert focused["style"] != "none" and contrast(focused["colour"], card) >= 3  # WCAG 1.4.11
    admin = site.tab(scheme, admin=True)
    for path, selector in (
        (site.reader_page, "button.danger"),  # "Erase this reader"
        ("/admin/feeds", "button.danger"),  # "Remove"
        ("/admin/feeds", "nav.ops-nav a[aria-current=page]"),
        ("/admin/subscribers", ".badge"),
    ):
        admin.goto(site.base + path)
        assert text_contrast(admin, selector) >= 4.5, (scheme, path, selector)


def test_a_long_address_and_the_import_header_fit_a_phone(site: Site) -> None:
    page = site.tab(width=PHONE["width"])
    for path in (site.unsubscribe, site.preferences):
        page.goto(site.base + path)
        assert page.get_by_text(LONG).first.is_visible()
        assert fits(page), path
    admin = site.tab(width=PHONE["width"], admin=True)
    admin.goto(f"{site.base}/admin/import")
    assert fits(admin), "/admin/import"
    narrowest = site.tab(width=320)  # WCAG 1.4.10's reflow width: topic tiles in two columns
    for path in ("/subscribe?categories=ai", site.preferences):
        narrowest.goto(site.base + path)
        narrowest.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        assert fits(narrowest), path


def _blur(page: Page) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")


def _focus_changes_the_look(page: Page, selector: str) -> None:
    _blur(page)
    before = ring(page, selector)
    page.locator(selector).first.focus()
    after = ring(page, selector)
    assert after["style"] != "none" and after["width"] >= 2, (selector, after)
    assert (after["style"], after["width"], after["shadow"]) != (
        before["style"],
        before["width"],
        before["shadow"],
    ), selector


def test_every_field_shows_a_focus_ring_even_when_refused(site: Site) -> None:
    page = site.tab()
    page.goto(f"{site.base}/subscribe")
    for selector in ("#email", "#timezone"):
        _focus_changes_the_look(page, selector)
    page.get_by_role("button", name="Subscribe").click()  # no address: refused
    assert page.locator("#email").get_attribute("aria-invalid") == "true"
    _focus_changes_the_look(page, "#email")
    page.goto(site.base + site.preferences)
    _focus_changes_the_look(page, "#pause_until")
    page.goto(f"{site.base}/admin")  # signed out: the sign-in form
    _focus_changes_the_look(page, "#token")
    admin = site.tab(admin=True)
    admin.goto(f"{site.base}/admin/subscribers")
    _focus_changes_the_look(admin, ".ops-input")


def test_admin_pages_have_a_skip_link_landmarks_and_ordered_headings(site: Site) -> None:
    page = site.tab(admin=True)
    page.goto(f"{site.base}/admin/articles")
    page.keyboard.press("Tab")
    skip = page.evaluate("[document.activeElement.textContent, document.activeElement.hash]")
    assert skip == ["Skip to main content", "#main"]
    box = page.locator("a.skip").bounding_box()
    assert box is not None and box["y"] >= 0  # shown while it has the focus
    assert page.locator("main nav, main .ops-nav").count() == 0
    assert page.locator("nav.ops-nav").count() == 1
    for path in (site.reader_page, site.edition_page, "/admin/articles"):
        page.goto(site.base + path)
        levels = headings(page)
        assert levels[0] == 1 and all(b - a <= 1 for a, b in itertools.pairwise(levels)), path
    page.goto(f"{site.base}/admin")
    for region in page.locator("details .scroll").all():
        assert region.get_attribute("tabindex") == "0" and region.get_attribute("role") == "region"
        assert region.get_attribute("aria-label")


def test_targets_are_44_px_tall_on_a_phone(site: Site) -> None:
    page = site.tab(width=PHONE["width"], admin=True)
    wanted = {
        "/admin": ["nav.ops-nav button", "details > summary"],
        "/admin/articles": [".editor button", ".editor input[type=datetime-local]"],
        "/admin/feeds": [".row-actions .button"],
        site.reader_page: [".actions a[href*=preview]"],
        "/admin/editions": ["ul.edition-list li > a"],
    }
    for path, selectors in wanted.items():
        page.goto(site.base + path)
        for selector in selectors:
            for target in page.locator(selector).all():
                box = target.bounding_box()
                assert box is not None and box["height"] >= 44, (path, selector, box)
    public = site.tab(width=PHONE["width"])
    public.goto(site.base + site.preferences)
    for selector in ("a.logo", "label.check"):
        assert min(_heights(public, selector)) >= 44, selector


def _heights(page: Page, selector: str) -> list[float]:
    boxes = [t.bounding_box() for t in page.locator(selector).all()]
    assert boxes, selector
    return [b["height"] if b is not None else 0.0 for b in boxes]


def _reloads(page: Page, ms: int) -> bool:
    """Run the page's timers ``ms`` ahead; whether it reloaded meanwhile."""
    page.evaluate("window.stillHere = true")
    page.clock.run_for(ms)
    page.wait_for_load_state()
    return not page.evaluate("window.stillHere === true")


def test_auto_refresh_waits_for_the_operator_and_can_be_paused(site: Site) -> None:
    page = site.tab(admin=True)
    page.clock.install(time=NOW)
    page.goto(f"{site.base}/admin")
    toggle = page.get_by_role("button", name="Pause auto-refresh")
    assert toggle.is_visible()
    page.get_by_role("button", name="Sign out").focus()
    assert not _reloads(page, 35_000)  # a control has the focus
    _blur(page)
    with page.expect_event("load"):
        page.clock.run_for(11_000)  # nobody busy: it follows the send
    page.get_by_role("button", name="Pause auto-refresh").focus()
    assert not _reloads(page, 35_000)  # the keyboard is on the button: it stays there
    page.get_by_role("button", name="Pause auto-refresh").click()
    _blur(page)
    assert not _reloads(page, 35_000)  # paused
    assert page.locator("#refresh-state").inner_text() == "Auto-refresh paused."
    with page.expect_event("load"):  # resumed: at once
        page.get_by_role("button", name="Resume auto-refresh").click()
    # Without the script (JavaScript off) the box stays hidden, whatever its class shows.
    display = page.evaluate(
        "() => { const box = document.getElementById('refresh'); box.hidden = true;"
        " return getComputedStyle(box).display; }"
    )
    assert display == "none"
    page.goto(f"{site.base}/admin/editions")
    page.locator("#preview-email").fill("someone@exa")
    _blur(page)
    assert not _reloads(page, 35_000)  # something typed is never thrown away
    assert page.locator("#preview-email").input_value() == "someone@exa"


def _assert_refused_field(page: Page, selector: str, says: str) -> None:
    field = page.locator(selector)
    assert field.get_attribute("aria-invalid") == "true", selector
    assert says in described_by(page, selector), (selector, described_by(page, selector))
    assert focus_reaches(page, selector.lstrip("#"))  # the focus is on it
    link = page.locator("[role=alert] a").first.get_attribute("href")
    assert link == selector, (selector, link)


def test_a_refused_admin_form_comes_back_with_the_error_on_its_field(site: Site) -> None:
    page = site.tab(admin=True)
    page.goto(f"{site.base}/admin/articles")
    until = page.locator("input[type=datetime-local]").first
    assert until.get_attribute("required") is not None
    field = f"#{until.get_attribute('id')}"
    # A browser stops an empty required field itself; the server must hold too.
    page.evaluate("document.querySelectorAll('form').forEach(f => f.noValidate = true)")
    until.fill("")
    page.locator(".editor").first.get_by_role("button", name="Pin").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Articles"
    _assert_refused_field(page, field, "Pin until (UTC): required")
    page.goto(f"{site.base}/admin/feeds")
    page.get_by_label("Feed URL").fill("ftp://example.com/feed.xml")
    page.get_by_role("button", name="Fetch and add").click()
    _assert_refused_field(page, "#feed-url", "Feed URL: expected an http(s) feed URL")
    assert page.locator("#feed-url").input_value() == "ftp://example.com/feed.xml"
    page.goto(site.base + site.reader_page)
    page.locator("#confirm_email").fill("someone.else@example.com")
    page.get_by_role("button", name="Erase this reader").click()
    _assert_refused_field(page, "#confirm_email", "Address: type the reader's address")
    page.goto(f"{site.base}/admin/editions")
    page.locator("#preview-email").fill("nobody@example.com")
    page.get_by_role("button", name="Preview").click()
    _assert_refused_field(page, "#preview-email", "Reader's address: no subscriber")


def test_refused_choices_are_marked_and_take_the_focus(site: Site) -> None:
    page = site.tab()
    page.goto(f"{site.base}/subscribe")
    page.locator("#email").fill("ann@example.com")
    page.evaluate("document.querySelectorAll('[name=categories]').forEach(b => b.checked = false)")
    page.get_by_role("button", name="Subscribe").click()
    assert focus_reaches(page, "cat-all")
    assert page.locator("[name=categories][aria-invalid=true]").count() >= 2
    assert page.locator("[role=alert] a[href='#cat-all']").count() == 1
    page.goto(site.base + site.preferences)
    page.get_by_role("button", name="Delete my data").click()  # the box not ticked
    box = "input[name=confirm_delete]"
    assert page.locator(box).get_attribute("aria-invalid") == "true"
    assert described_by(page, box).strip() != ""
    assert focus_reaches(page, "confirm_delete")


def test_web_copies_of_an_edition_have_a_main_landmark_an_h1_and_a_title(site: Site) -> None:
    page = site.tab(admin=True)
    page.goto(f"{site.base}/admin/subscribers")
    reader_id = site.reader_page.rsplit("/", 1)[1]
    page.goto(f"{site.base}/admin/subscribers/{reader_id}/preview?kind=daily")
    assert page.locator("main").count() == 1 and page.locator("main h1").count() == 1
    assert page.title().startswith("Preview · ") and page.title().endswith(" · Tech Pulse")
    assert headings(page)[0] == 1
