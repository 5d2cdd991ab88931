"""The emails in real Chromium at phone (375 px) and desktop-client (600 px) widths, light,
dark (prefers-color-scheme) and forced dark (Chromium's auto-darkening, as some mail apps
do). Screenshots go to test-artifacts/email/; the checks are what a reader would notice:
no sideways scrolling, a single column, dark text never on a dark page, a typical daily
within three and a half phone screens, and every footer link or button a 44 px tap target."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import time_machine
from playwright.sync_api import Browser, Page, Route

from digestd.mail.render import Renderer
from digestd.models import EditionKind
from tests.browser import ARTIFACTS, chromium
from tests.conftest import ADMIN_TOKEN, WebRig
from tests.email_samples import sample_context, typical_context
from tests.helpers import article, parse, parts
from tests.web_helpers import links_in, signup_form

WELCOMED = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # a Tuesday, 09:00 in New York
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

OUT = ARTIFACTS / "email"
MODES = {"light": [], "dark": [], "forced-dark": ["--enable-features=WebContentsForceDark"]}
# px: three and a half screens of a 375 x 667 phone (iPhone SE), of which the contents,
# whole headlines in rows of 44 px or more, take about 500.
PHONE_SCREENS = 3.5 * 667
TAP = 44  # px, Apple's and Google's minimum touch target


def _png(width: int, height: int) -> bytes:
    """A plain image of the size article images usually have (Open Graph's 1.91:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + bytes((70, 110, 190)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


IMAGE = _png(1200, 630)


def _serve_images_only(requests: list[str]) -> Callable[[Route], None]:
    """Email HTML must fetch nothing: each request is recorded, and only the article
    images (which mail clients load from the article's own CDN) are answered."""

    def handle(route: Route) -> None:
        requests.append(route.request.url)
        if route.request.url.startswith("https://cdn.example.com/"):
            route.fulfill(body=IMAGE, content_type="image/png")
        else:
            route.abort()

    return handle


@contextmanager
def _page(browser: Browser, width: int, mode: str, requests: list[str]) -> Iterator[Page]:
    page = browser.new_page(
        viewport={"width": width, "height": 900},
        color_scheme="dark" if mode == "dark" else "light",
    )
    page.route("**/*", _serve_images_only(requests))
    try:
        yield page
    finally:
        page.close()


def _editions() -> dict[str, str]:
    renderer = Renderer()
    return {
        "daily-10": renderer.render("daily", typical_context(EditionKind.DAILY, 10)).html,
        "weekly-15": renderer.render("weekly", typical_context(EditionKind.WEEKLY, 15)).html,
        "weekly-15-long-fields": renderer.render(
            "weekly", sample_context(EditionKind.WEEKLY, 15)
        ).html,
    }


def _check_layout(page: Page, name: str, width: int, mode: str) -> None:
    # nothing wider than the phone: no sideways scrolling at 375 px
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, (name, width, scroll_width)
    # single column, at most 600 px wide
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll('div')].map("
        "d => d.getBoundingClientRect().width))"
    )
    assert widest <= 600
    if mode == "dark":
        body = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert body == "rgb(15, 23, 42)"  # our dark palette applied
        colours = page.evaluate(
            "[...document.querySelectorAll('h2 a, h3 a, .toc a, .why, .foot p')]"
            ".map(e => getComputedStyle(e).color)"
        )
        dark_text = {"rgb(15, 23, 42)", "rgb(31, 41, 55)", "rgb(71, 85, 105)"}
        assert colours and not dark_text & set(colours), colours


@pytest.mark.parametrize("mode", list(MODES))
def test_editions_render_responsively_in_every_colour_mode(mode: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    editions = _editions()
    requests: list[str] = []
    shots = []
    with chromium(*MODES[mode]) as browser:
        for width in (375, 600):
            with _page(browser, width, mode, requests) as page:
                for name, html in editions.items():
                    page.set_content(html, wait_until="load")
                    _check_layout(page, name, width, mode)
                    shots.append(OUT / f"{name}-{width}px-{mode}.png")
                    shots[-1].unlink(missing_ok=True)
                    page.screenshot(path=str(shots[-1]), full_page=True)
    # the lead's image, nothing else
    assert requests and set(requests) == {"https://cdn.example.com/img/lead.png"} | {
        "https://cdn.example.com/img/0.jpg"
    }
    assert all(shot.stat().st_size > 10_000 for shot in shots)


def test_a_typical_daily_fits_three_and_a_half_phone_screens_and_its_taps_are_44_px() -> None:
    html = _editions()["daily-10"]
    requests: list[str] = []
    with chromium() as browser, _page(browser, 375, "light", requests) as page:
        page.set_content(html, wait_until="load")
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height <= PHONE_SCREENS, height
        # the lead's image loaded and took its place (it counts in the height)
        image = page.evaluate(
            "(() => { const i = document.querySelector('img');"
            " return [i.naturalWidth, i.getBoundingClientRect().height]; })()"
        )
        assert image[0] == 1200 and image[1] > 40, image
        taps = page.evaluate(
            "[...document.querySelectorAll('.foot a')].map(a => [a.textContent.trim(),"
            " a.getBoundingClientRect().height, a.getBoundingClientRect().width])"
        )
    names = [name for name, _, _ in taps]
    assert {"Manage preferences", "Unsubscribe", "View in browser"} <= set(names)
    assert len(names) >= 5  # and a mute link per category shown
    for name, tall, wide in taps:
        assert tall >= TAP and wide >= TAP, (name, tall, wide)


_ROWS = (
    "[...document.querySelectorAll('.toc a')].map(a => { const r = a.getBoundingClientRect();"
    " const s = a.firstElementChild || a; return {text: a.textContent, tall: r.height,"
    " wide: r.width, box: a.closest('td').getBoundingClientRect().width,"
    " lines: Math.round(s.getBoundingClientRect().height / 18),"
    " clipped: s.scrollHeight > s.clientHeight + 1 || s.scrollWidth > s.clientWidth + 1}; })"
)


def test_contents_rows_show_whole_headlines_as_44_px_links_on_a_phone() -> None:
    """At 375 px no typical headline is cut: each wraps within its row, a link as wide as
    the list and at least 44 px tall. A headline past two lines is clamped where the
    clamp is understood; without the <style> block (Gmail's apps drop @supports) it
    wraps whole."""
    renderer = Renderer()
    typical = renderer.render("daily", typical_context(EditionKind.DAILY, 10)).html
    long = renderer.render("daily", sample_context(EditionKind.DAILY, 10)).html
    bare = re.sub(r"<style[^>]*>.*?</style>", "", long, flags=re.S)
    requests: list[str] = []
    with chromium() as browser, _page(browser, 375, "light", requests) as page:
        page.set_content(typical, wait_until="load")
        rows = page.evaluate(_ROWS)
        page.set_content(long, wait_until="load")
        clamped = page.evaluate(_ROWS)
        page.set_content(bare, wait_until="load")
        wrapped = page.evaluate(_ROWS)
    assert len(rows) == 10 and any(row["lines"] == 2 for row in rows)
    for row in rows:
        assert row["tall"] >= TAP and row["wide"] == row["box"], row
        assert not row["clipped"] and row["lines"] <= 2, row
    longest = max(range(10), key=lambda i: len(clamped[i]["text"]))
    assert clamped[longest]["lines"] == 2 and clamped[longest]["clipped"]
    assert wrapped[longest]["lines"] > 2 and not wrapped[longest]["clipped"]
    assert all(row["tall"] >= TAP for row in clamped + wrapped)


def test_mute_chips_stand_evenly_apart() -> None:
    html = Renderer().render("daily", typical_context(EditionKind.DAILY, 10)).html
    requests: list[str] = []
    with chromium() as browser, _page(browser, 600, "light", requests) as page:
        page.set_content(html, wait_until="load")
        chips = page.evaluate(
            "[...document.querySelectorAll('.foot a[href*=\"/mute/\"] span')].map(s => {"
            " const r = s.getBoundingClientRect(); return [r.left, r.right, r.top]; })"
        )
    assert len(chips) == 4 and len({top for _, _, top in chips}) == 1  # one row
    gaps = [b[0] - a[1] for a, b in pairwise(chips)]
    assert max(gaps) - min(gaps) < 1 and 4 <= min(gaps) <= 12, gaps


def _taps_and_shots(browser: Browser, html: str, name: str) -> None:
    requests: list[str] = []
    for width in (375, 600):
        for mode in ("light", "dark"):
            with _page(browser, width, mode, requests) as page:
                page.set_content(html, wait_until="load")
                _check_layout(page, name, width, mode)
                page.screenshot(path=str(OUT / f"{name}-{width}px-{mode}.png"), full_page=True)
                # the footer's links and the buttons (MJML makes each an <a target>)
                taps = page.evaluate(
                    "[...document.querySelectorAll('.foot a, td > a[target]')]"
                    ".map(a => [a.textContent.trim(), a.getBoundingClientRect().height])"
                )
                assert len(taps) >= 3
                for label, tall in taps:
                    assert tall >= TAP, (name, label, tall)
                if mode == "dark":  # a button's label stays white on its blue
                    labels = page.evaluate(
                        "[...document.querySelectorAll('td > a[target]')]"
                        ".map(a => getComputedStyle(a).color)"
                    )
                    assert set(labels) <= {"rgb(241, 245, 249)"}, labels


def test_the_confirmation_email_and_its_button(web: WebRig) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    signup_form(web, "ann@example.com")
    html = parts(parse(web.smtp.messages[-1].data))[1]
    assert "Confirm my subscription" in html
    with chromium() as browser:
        _taps_and_shots(browser, html, "confirm")


def test_the_welcome_email_says_when_and_links_the_archive(web: WebRig) -> None:
    """Sent once the reader confirms: the first digest's day, time and zone, the latest
    public editions of their topics, and its links and button as 44 px taps."""
    items = [article("ai-1", "ai", WELCOMED - timedelta(hours=12), score=5)]
    assert web.client.post("/api/articles", json=items, headers=ADMIN).status_code == 200
    web.portal.call(web.service.tick, WELCOMED.replace(hour=7, minute=5))  # the archive's
    with time_machine.travel(WELCOMED, tick=False):
        signup_form(web, "ann@example.com", timezone="America/New_York")
        assert web.client.get(links_in(web.smtp.messages[-1].data)["confirm"]).status_code == 200
    welcome = parse(web.smtp.messages[-1].data)
    assert welcome["Subject"].startswith("Welcome to Tech Pulse")
    html = parts(welcome)[1]
    assert "tomorrow at 07:00 America/New_York" in html
    assert "https://digest.example.com/archive/ai/daily/2026-12-01" in html
    OUT.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        _taps_and_shots(browser, html, "welcome")
