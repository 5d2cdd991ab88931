"""What the digests sold, in the admin console: the clicks charts beside the dashboard's
others, each edition's clicks on the Editions page with the week's top stories, one
edition's report with its stories; a reader's clicks and sunset steps on their page."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine

from tests.admin_client import sign_in
from tests.click_helpers import SENT, edition_with_clicks
from tests.conftest import WebRig
from tests.web_helpers import text_of


def _row(page: str, table: str, first_cell: str) -> list[str]:
    """The cells' text of the row of ``table`` whose first cell starts with ``first_cell``."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = [text_of(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        if cells and cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no row {first_cell!r} in {table}")


def test_the_console_shows_what_each_edition_and_story_sold(web: WebRig) -> None:
    edition_with_clicks(web)
    with time_machine.travel(SENT + timedelta(hours=3), tick=False):
        sign_in(web.client)
        dashboard = web.client.get("/admin").text
        editions = web.client.get("/admin/editions")
        report = web.client.get("/admin/editions/1")
    assert "Clicks on stories" in dashboard and "Readers who clicked" in dashboard
    assert editions.status_code == 200
    words = text_of(editions.text)
    assert "3 sent" in words
    assert "4 clicks · 2 unique clickers · 66.7 % click-through · 4 scanner clicks" in words
    lead = _row(editions.text, "top-stories", "Story ai-0")
    assert lead[1:] == ["3", "3", "2", "66.7 %"] and "ai · S0" in lead[0]
    assert _row(editions.text, "top-stories", "Story robots-1")[1:] == ["2", "1", "1", "50.0 %"]

    assert report.status_code == 200
    facts = text_of(report.text)
    for fact in (
        "Unsubscribed after it 1",
        "Clicks 4",
        "Unique clickers 2",
        "Click-through 66.7 %",
    ):
        assert fact in facts
    assert "Scanner clicks 4" in facts
    assert _row(report.text, "stories", "Story ai-0")[1:] == ["3", "3", "2", "66.7 %"]
    assert _row(report.text, "stories", "Story ai-3")[1:] == ["3", "0", "0", "0.0 %"]
    stories = re.findall(r'<td class="wrap-any"><a href="[^"]+"[^>]*>Story ([\w-]+)<', report.text)
    assert stories[0] == "ai-0"  # most unique clickers first
