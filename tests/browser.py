"""Real Chromium for tests: Debian's /usr/bin/chromium driven by Playwright, never a download.

Playwright's ``launch`` gives every browser a fresh temporary profile (user data dir).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from digestd.config import load_settings
from digestd.service import Service

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


def ticks(env: dict[str, str], *instants: datetime) -> None:
    """The daemon's tick at each instant, by a service of its own (as ``run`` has), in a
    thread of its own: Playwright's sync API holds an event loop in this one."""
    service = Service.build(load_settings(env))

    async def run() -> None:
        try:
            for now in instants:
                await service.tick(now)
        finally:
            await service.close()

    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, run()).result()
    service.engine.dispose()
