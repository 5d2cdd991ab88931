"""The digest in real Chromium at phone (375 px) and desktop-client (600 px) widths, light,
dark (prefers-color-scheme) and forced dark (Chromium's auto-darkening, as some mail apps
do). Screenshots go to test-artifacts/email/; the checks are what a reader would notice."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Request

from digestd.mail.render import Renderer
from digestd.models import EditionKind
from tests.browser import ARTIFACTS, chromium
from tests.email_samples import sample_context

OUT = ARTIFACTS / "email"
MODES = {"light": [], "dark": [], "forced-dark": ["--enable-features=WebContentsForceDark"]}


def _recorder(seen: list[str]) -> Callable[[Request], None]:
    return lambda request: seen.append(request.url)


@pytest.mark.parametrize("mode", list(MODES))
def test_editions_render_responsively_in_every_colour_mode(mode: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    renderer = Renderer()
    editions = {
        f"{kind}-{n}": renderer.render(str(kind), sample_context(kind, n)).html
        for kind, n in [(EditionKind.DAILY, 5), (EditionKind.WEEKLY, 15)]
    }
    with chromium(*MODES[mode]) as browser:
        for width in (375, 600):
            page = browser.new_page(
                viewport={"width": width, "height": 900},
                color_scheme="dark" if mode == "dark" else "light",
            )
            # Email HTML must not fetch anything: any request is a failure (images excepted,
            # which mail clients load from the article's own CDN).
            requests: list[str] = []
            page.on("request", _recorder(requests))
            page.route("**/*", lambda route: route.abort())
            for name, html in editions.items():
                page.set_content(html, wait_until="domcontentloaded")
                # nothing wider than the phone: no sideways scrolling at 375 px
                scroll_width = page.evaluate("document.documentElement.scrollWidth")
                assert scroll_width <= width, (name, width, scroll_width)
                # single column, at most 600 px wide
                widest = page.evaluate(
                    "Math.max(...[...document.querySelectorAll('div')].map("
                    "d => d.getBoundingClientRect().width))"
                )
                assert widest <= 600
                body_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
                if mode == "dark":
                    assert body_bg == "rgb(15, 23, 42)"  # our dark palette applied
                    title_colour = page.evaluate(
                        "getComputedStyle(document.querySelector('h2 a')).color"
                    )
                    assert title_colour != "rgb(15, 23, 42)"  # not dark text on dark
                page.screenshot(path=str(OUT / f"{name}-{width}px-{mode}.png"), full_page=True)
            assert all(
                r.startswith("https://cdn.example.com/") or r.startswith("about:") for r in requests
            ), requests
            page.close()
    assert len(list(OUT.glob(f"*-{mode}.png"))) >= 4
