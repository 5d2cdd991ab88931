"""The engagement pages of ``/admin``: the clicks charts beside the dashboard's others, the
editions with their emails and clicks, the week's top stories and one edition's stories,
behind the admin sign-in."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine

from tests.admin_seed import TOKEN
from tests.click_helpers import SENT, edition_with_clicks
from tests.conftest import WebRig
from tests.web_helpers import csrf_of, text_of


def _sign_in(web: WebRig) -> None:
    page = web.client.get("/admin")
    answer = web.client.post("/admin/login", data={"csrf": csrf_of(page.text), "token": TOKEN})
    assert answer.status_code == 303


def _row(page: str, table: str, first_cell: str) -> list[str]:
    """The cells' text of the row of ``table`` whose first cell starts with ``first_cell``."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = [text_of(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        if cells and cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no row {first_cell!r} in {table}")


def test_the_pages_show_what_each_edition_and_story_sold(web: WebRig) -> None:
    assert web.client.get("/admin/engagement").headers["location"] == "/admin"  # signed out
    edition_with_clicks(web)
    with time_machine.travel(SENT + timedelta(hours=3), tick=False):
        _sign_in(web)
        dashboard = web.client.get("/admin").text
        overview = web.client.get("/admin/engagement")
        one = web.client.get("/admin/engagement/1")
    assert "Clicks on stories" in dashboard and "Readers who clicked" in dashboard
    assert 'href="/admin/engagement"' in dashboard
    assert overview.status_code == 200
    daily = _row(overview.text, "editions", "Daily 2026-11-30")
    # sent, failed, bounced, unsubscribed, clicks, unique clickers, rate, scanner clicks
    assert daily[1:] == ["3", "0", "0", "1", "4", "2", "66.7 %", "4"]
    lead = _row(overview.text, "top-stories", "Story ai-0")
    assert lead[1:] == ["3", "3", "2", "66.7 %"] and "ai · S0" in lead[0]
    assert _row(overview.text, "top-stories", "Story robots-1")[1:] == ["2", "1", "1", "50.0 %"]

    assert 'href="/admin/engagement/1">Daily 2026-11-30' in overview.text
    assert one.status_code == 200 and "<h1>Daily 2026-11-30</h1>" in one.text
    assert _row(one.text, "edition", "All stories")[1:] == daily[1:]
    assert _row(one.text, "stories", "Story ai-3")[1:] == ["3", "0", "0", "0.0 %"]
    with time_machine.travel(SENT + timedelta(hours=3), tick=False):
        assert web.client.get("/admin/engagement/999").status_code == 404
        assert web.client.get("/admin/engagement/x").status_code == 404
