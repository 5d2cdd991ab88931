"""From articles to a real inbox: the whole job, through the real CLI and a real SMTP server.

Three readers in America/Los_Angeles (UTC-8), Asia/Kolkata (UTC+5:30) and Pacific/Auckland
(UTC+13 in November) with different categories; ticks just before and just after each
one's local 07:00 over two local days. Every reader must get exactly one daily per local
date, holding only their categories' articles, best-ranked first.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from tests.conftest import SmtpSink
from tests.helpers import SAMPLE_ARTICLE, article, parse, parts, run_cli

CATEGORIES = ["ai", "robotics", "fintech", "quantum"]
READERS = {
    "la@example.com": ("America/Los_Angeles", ["ai", "robotics"]),
    "kolkata@example.org": ("Asia/Kolkata", ["fintech", "ai"]),
    "auckland@example.net": ("Pacific/Auckland", ["quantum", "robotics"]),
}
IMPORTED_AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LOCAL_DATES = {  # the two local dates each reader's dailies are for
    "la@example.com": ["2026-11-29", "2026-11-30"],
    "kolkata@example.org": ["2026-11-30", "2026-12-01"],
    "auckland@example.net": ["2026-11-30", "2026-12-01"],
}


def _articles() -> list[dict[str, Any]]:
    """Two daily batches published 10:00-11:00Z on Nov 29 and Nov 30: 3 per category per day.

    Scores grow by 30 % from one article to the next and a batch spans one hour, so recency
    decay (at most 3 % within a batch) cannot reorder them: expected order is by score.
    """
    items: list[dict[str, Any]] = []
    for day in (29, 30):
        for i in range(12):
            category = CATEGORIES[i % 4]
            published = datetime(2026, 11, day, 10, 0, tzinfo=UTC) + timedelta(minutes=5 * i)
            items.append(
                article(
                    f"{category}-{day}-{i}",
                    category,
                    published,
                    score=round(2 * 1.3**i, 2),
                    source=f"Source {i % 5}",
                )
            )
    sample = dict(SAMPLE_ARTICLE, published_at="2026-11-29T10:30:00Z")  # the SPEC §3 item
    items.append(sample)
    return items


def _tick_instants() -> list[datetime]:
    instants = []
    for address, (zone, _) in READERS.items():
        for local_date in LOCAL_DATES[address]:
            seven = datetime.fromisoformat(f"{local_date}T07:00").replace(tzinfo=ZoneInfo(zone))
            instants += [seven - timedelta(minutes=1), seven + timedelta(minutes=1)]
    return sorted(i.astimezone(UTC) for i in instants)


def test_each_reader_gets_one_daily_per_local_date_with_their_top_articles(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    # The stories are told apart by their own URLs: links left as they are (tracked links
    # are test_clicks.py's).
    env = {**env, "DIGESTD_SMTP_URL": smtp_server.url, "DIGESTD_TRACK_CLICKS": "off"}
    items = _articles()
    (tmp_path / "articles.json").write_text(json.dumps(items))
    csv_lines = ["email,categories,frequency,timezone"] + [
        f'{address},"{",".join(cats)}",daily,{zone}' for address, (zone, cats) in READERS.items()
    ]
    (tmp_path / "readers.csv").write_text("\n".join(csv_lines) + "\n")

    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "articles.json")) == 0
    with time_machine.travel(IMPORTED_AT, tick=False):
        assert (
            run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "readers.csv")) == 0
        )

    for instant in _tick_instants():
        before = len(smtp_server.messages)
        assert run_cli(monkeypatch, env, "tick", "--now", instant.isoformat()) == 0
        # A second pass at the same instant (a restart, another worker) sends nothing more.
        assert run_cli(monkeypatch, env, "tick", "--now", instant.isoformat()) == 0
        new = smtp_server.messages[before:]
        for received in new:
            zone = ZoneInfo(READERS[received.recipients[0]][0])
            local = instant.astimezone(zone)
            # sent within a minute after the reader's local 07:00, never before it
            assert (local.hour, local.minute) == (7, 1), (received.recipients, local)

    delivered: dict[str, list[str]] = {address: [] for address in READERS}
    for received in smtp_server.messages:
        (address,) = received.recipients
        message = parse(received.data)
        assert message["To"] == address
        text, html = parts(message)
        local_date = re.search(r"Daily digest · \w+ (\d+) (\w+) (\d{4})", text)
        assert local_date is not None
        delivered[address].append(
            datetime.strptime(" ".join(local_date.groups()), "%d %B %Y").date().isoformat()
        )
        _, categories = READERS[address]
        # each story's link stands on a line of its own, in the order of the stories
        urls = re.findall(r"^ *(https://(?:news\.example|the-decoder)\.com/\S+)\r?$", text, re.M)
        assert urls, "the digest lists articles"
        shown = [next(a for a in items if a["url"] == url) for url in urls]
        # only the reader's categories
        assert all(set(a["categories"]) & set(categories) for a in shown)
        # best-ranked first
        scores = [float(a["score"]) for a in shown]
        assert scores == sorted(scores, reverse=True)
        # every article of the reader's categories in the window is there (fewer than 10)
        window_days = {str(a["published_at"])[:10] for a in shown}
        assert len(window_days) == 1
        (window_day,) = window_days
        expected = {
            a["url"]
            for a in items
            if set(a["categories"]) & set(categories)
            and str(a["published_at"]).startswith(window_day)
        }
        assert set(urls) == expected
        for url in urls:
            assert url in html

    assert delivered == {address: LOCAL_DATES[address] for address in READERS}


def test_the_sample_article_reaches_an_ai_reader_with_everything_the_site_shows(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    env = {**env, "DIGESTD_SMTP_URL": smtp_server.url}
    sample = dict(SAMPLE_ARTICLE, published_at="2026-11-29T10:30:00Z")
    (tmp_path / "a.json").write_text(json.dumps([sample]))
    (tmp_path / "r.csv").write_text(
        "email,categories,frequency,timezone\nann@example.com,ai,daily,UTC\n"
    )
    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "a.json")) == 0
    with time_machine.travel(IMPORTED_AT, tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "r.csv")) == 0
    assert run_cli(monkeypatch, env, "tick", "--now", "2026-11-30T07:00:00Z") == 0

    (received,) = smtp_server.messages
    message = parse(received.data)
    text, html = parts(message)
    for piece in (
        "Meta's Internal Memo Signals AI Comeback After Rocky Year",
        "THE DECODER",
        "Why it matters",
        "Avocado completes pretraining",
        "Meta (META)",
        "Scale AI",
    ):
        assert piece in text
    for piece in (
        "Meta&#39;s Internal Memo",
        "THE DECODER",
        "Why it matters",
        "Meta (META)",
        'href="https://digest.example.com/c/',  # the title's link, tracked
        "Tech Pulse Ltd · 1 Market Street",
        "Manage preferences",
        "Unsubscribe",
    ):
        assert piece in html.replace("&#x27;", "&#39;").replace("'", "&#39;"), piece
    assert (
        "AI"
        in text.splitlines()[
            text.splitlines().index(
                next(line for line in text.splitlines() if "Meta's Internal Memo" in line)
            )
            + 1
        ]
    )
    assert received.envelope_from.startswith("bounces+")
    assert received.envelope_from.endswith("@news.example.com")
