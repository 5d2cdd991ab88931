"""Tracked links against the running app: a click on a digest's article records and answers
303 to the article's stored URL; a forged, truncated, altered or other-purpose token gets a
400 page and records nothing; a link scanner's burst is not counted as interest; ``off``
sends the articles' own links."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import delete, func, select

from digestd.config import Settings, load_settings
from digestd.mail.template import MessageTemplate
from digestd.models import Article, Click, ClickInbox, ClickMark, Subscriber
from digestd.readers.subscribers import erase
from digestd.tokens import Purpose
from tests.click_helpers import ADMIN, SENT, count, send_daily, settle, stories, tracked_links
from tests.conftest import WebRig
from tests.helpers import parse, parts
from tests.web_helpers import links_in

BASE = "https://digest.example.com"


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(SENT + timedelta(minutes=30), tick=False) as traveller:
        yield traveller


def test_a_click_records_and_goes_to_the_articles_stored_url(
    web: WebRig, clock: time_machine.Traveller
) -> None:
    links = tracked_links(send_daily(web))
    assert len(links) == 5 and len(set(links)) == 5
    web.client.get("/c/1.1.AAAAAAAA")  # refused
    answer = web.client.get(links[0])
    assert answer.status_code == 303
    assert answer.headers["location"] == "https://news.example.com/ai-0"  # the lead
    assert count(web, ClickInbox) == 1 and count(web, Click) == 0
    assert web.client.get(links[4]).headers["location"] == "https://news.example.com/robots-1"

    settle(web, SENT + timedelta(minutes=31))
    assert count(web, ClickInbox) == 0
    with web.service.sessions() as session:
        rows = session.scalars(select(Click).order_by(Click.position)).all()
    assert [(c.article_id, c.category, c.source) for c in rows] == [
        ("ai-0", "ai", "S0"),
        ("robots-1", "robotics", "Robo Wire"),
    ]
    assert all(c.first_of_article and not c.scanner for c in rows)
    assert [c.first_of_edition for c in rows] == [True, False]  # one reader
    assert all(c.subscriber_id is None for c in rows)  # aggregate: no reader named
    metrics = web.service.metrics.exposition().decode()
    assert 'digestd_clicks_total{answer="article"} 2.0' in metrics
    assert 'digestd_clicks_total{answer="refused"} 1.0' in metrics


def test_clicking_again_counts_the_click_not_the_reader(
    web: WebRig, clock: time_machine.Traveller
) -> None:
    links = tracked_links(send_daily(web))
    for _ in range(3):
        assert web.client.get(links[1]).status_code == 303
        clock.shift(timedelta(minutes=2))
    settle(web, SENT + timedelta(hours=1))
    assert count(web, Click) == 3
    assert count(web, Click, Click.first_of_article) == 1
    assert count(web, Click, Click.first_of_edition) == 1


def test_a_link_replayed_within_a_minute_is_one_click(
    web: WebRig, clock: time_machine.Traveller
) -> None:
    """A forwarded link replayed by a script (or reloaded, double-clicked): each request is
    redirected, but the same link of the same email counts once a minute at most."""
    links = tracked_links(send_daily(web))
    for _ in range(50):
        assert web.client.get(links[1]).status_code == 303
        clock.shift(timedelta(milliseconds=500))
    clock.shift(timedelta(minutes=2))
    web.client.get(links[1])  # a minute after the last one counted: counted again
    web.client.get(links[2])  # another story: a click of its own
    report = settle(web, SENT + timedelta(hours=1))
    assert count(web, Click) == 3 and count(web, Click, Click.scanner) == 0
    assert report.repeats == 49 and report.clicks == 3
    assert count(web, ClickInbox) == 0


def test_the_article_is_followed_where_it_moved_and_to_the_archive_once_gone(
    web: WebRig, clock: time_machine.Traveller
) -> None:
    links = tracked_links(send_daily(web))
    moved = dict(stories()[0], url="https://news.example.com/ai-0-corrected")
    assert web.client.post("/api/articles", json=[moved], headers=ADMIN).status_code == 200
    assert web.client.get(links[0]).headers["location"] == moved["url"]
    with web.service.sessions.begin() as session:
        session.execute(delete(Article).where(Article.id == "ai-0"))
    gone = web.client.get(links[0])
    assert gone.status_code == 303 and gone.headers["location"] == f"{BASE}/archive"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda t: t[:-1], id="truncated by one"),
        pytest.param(lambda t: t[: len(t) // 2], id="truncated to half"),
        pytest.param(lambda t: t.rsplit(".", 1)[0], id="without its tag"),
        pytest.param(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), id="tag altered"),
        pytest.param(lambda t: re.sub(r"\.(\d+)\.", ".2.", t, count=1), id="other link number"),
        pytest.param(lambda t: str(int(t.split(".")[0]) + 1) + t[t.index(".") :], id="other email"),
        pytest.param(lambda t: t + "x", id="lengthened"),
        pytest.param(lambda t: "0" + t, id="zero-padded"),
    ],
)
def test_a_spoiled_token_is_refused_and_records_nothing(web: WebRig, spoil: Any) -> None:
    token = tracked_links(send_daily(web))[0].removeprefix("/c/")
    answer = web.client.get(f"/c/{spoil(token)}")
    assert answer.status_code == 400
    assert "not valid" in answer.text and "location" not in answer.headers
    assert count(web, ClickInbox) == 0


def test_other_purposes_tokens_are_refused(web: WebRig) -> None:
    digest = send_daily(web)
    personal = links_in(digest)
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    delivery_id = int(tracked_links(digest)[0].removeprefix("/c/").split(".")[0])
    tokens = web.service.tokens
    others = [
        personal["view"].rsplit("/", 1)[1],
        personal["unsubscribe"].rsplit("/", 1)[1],
        tokens.make(Purpose.PREFERENCES, reader.public_id),
        tokens.bounce_tag(delivery_id),  # "<id>.<signature>"
        f"{delivery_id}.1.{tokens.message_tag(delivery_id)[:8]}",  # the Message-ID's key
        "https:%2F%2Fevil.example%2F",
    ]
    for token in others:
        assert web.client.get(f"/c/{token}").status_code in (400, 404), token
    assert count(web, ClickInbox) == 0


def test_head_and_unknown_emails_record_nothing(web: WebRig, clock: time_machine.Traveller) -> None:
    links = tracked_links(send_daily(web))
    assert web.client.head(links[0]).status_code == 303  # a link checker
    assert count(web, ClickInbox) == 0
    erase_reader(web, "ann@example.com")  # the queue row goes with the reader
    answer = web.client.get(links[0])
    assert answer.status_code == 303 and answer.headers["location"] == f"{BASE}/archive"
    assert count(web, ClickInbox) == 0


def erase_reader(web: WebRig, email: str) -> None:
    with web.service.sessions.begin() as session:
        assert erase(session, email, datetime.now(UTC))


def test_a_scanners_burst_is_not_counted_as_interest(
    web: WebRig, clock: time_machine.Traveller
) -> None:
    links = tracked_links(send_daily(web))
    for link in links:  # every link within a second, as Safe Links does on delivery
        assert web.client.get(link).status_code == 303  # still redirected
        clock.shift(timedelta(milliseconds=150))
    settle(web, SENT + timedelta(minutes=30, seconds=5))  # not quiet long enough yet
    assert count(web, ClickInbox) == 5
    settle(web, SENT + timedelta(minutes=31))
    assert count(web, Click) == 5 and count(web, Click, Click.scanner) == 5
    assert count(web, Click, Click.first_of_article) == 0 and count(web, ClickMark) == 0

    clock.shift(timedelta(hours=2))  # the reader, later
    web.client.get(links[2])
    settle(web, SENT + timedelta(hours=3))
    person = count(web, Click, ~Click.scanner)
    assert person == 1 and count(web, Click, Click.first_of_article, Click.first_of_edition) == 1


def test_two_stories_opened_one_after_the_other_are_a_person(
    web: WebRig, clock: time_machine.Traveller
) -> None:
    links = tracked_links(send_daily(web))
    for link in links[:2]:
        web.client.get(link)
        clock.shift(timedelta(seconds=1))
    clock.shift(timedelta(seconds=20))
    web.client.get(links[2])
    settle(web, SENT + timedelta(minutes=32))
    assert count(web, Click, Click.scanner) == 0 and count(web, Click, Click.first_of_article) == 3


@pytest.fixture
def reader_mode(web_env: dict[str, str]) -> dict[str, str]:
    web_env["DIGESTD_TRACK_CLICKS"] = "reader"
    return web_env


def test_reader_mode_names_the_reader_and_notes_their_last_click(
    reader_mode: dict[str, str], web: WebRig, clock: time_machine.Traveller
) -> None:
    assert web.service.settings.tracks_readers
    links = tracked_links(send_daily(web))
    web.client.get(links[4])
    settle(web, SENT + timedelta(minutes=31))
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.last_click_at == SENT + timedelta(minutes=30)
    with web.service.sessions() as session:
        click = session.scalars(select(Click)).one()
    assert click.subscriber_id == reader.id and click.category == "robotics"
    erase_reader(web, "ann@example.com")
    assert count(web, Click) == 0  # erasure takes the reader's clicks


@pytest.fixture
def off_env(web_env: dict[str, str]) -> dict[str, str]:
    web_env["DIGESTD_TRACK_CLICKS"] = "off"
    return web_env


def test_with_tracking_off_the_email_carries_the_articles_own_urls(
    off_env: dict[str, str], web: WebRig
) -> None:
    assert load_settings(off_env).track_clicks == "off"
    digest = send_daily(web)
    text, html = parts(parse(digest))
    assert "/c/" not in text and "/c/" not in html
    for story in stories():
        assert re.search(rf"^ *{re.escape(story['url'])}\r?$", text, re.M), story["id"]
        assert f'href="{story["url"]}"' in html
    with web.service.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 1


def test_view_in_browser_and_the_archive_carry_no_tracked_link(web: WebRig) -> None:
    digest = send_daily(web)
    web.portal.call(web.service.tick, SENT + timedelta(hours=2))  # publishes the archive
    pages = [web.client.get(links_in(digest)["view"]), web.client.get("/archive/ai/daily/latest")]
    pages[1] = web.client.get(pages[1].headers["location"])
    for page in pages:
        assert page.status_code == 200
        assert "/c/" not in page.text
        assert 'href="https://news.example.com/ai-0"' in page.text


def test_links_signed_before_a_key_rotation_still_count() -> None:
    from digestd.tokens import Tokens

    old, new = "old-secret-key-0123456789", "new-secret-key-0123456789"
    tags = Tokens([old]).click_tags(41, 15)
    rotated = Tokens([new, old])
    assert [rotated.read_click(f"41.{n}.{tag}") for n, tag in enumerate(tags, 1)] == [
        (41, n) for n in range(1, 16)
    ]
    assert rotated.click_tags(41, 15) != tags  # the newest key signs


def _twelve_story_daily(settings: Settings, *, tracked: bool) -> MessageTemplate:
    """A daily of twelve AI stories, rendered as the planner renders one."""
    from dataclasses import replace

    from digestd.mail.digests import ArticleFields, DigestRenderer, Masthead
    from digestd.mail.layout import Entry, Layout, Section
    from digestd.models import EditionKind

    articles = {
        f"a{i}": ArticleFields(
            f"https://news.example.com/{i}", f"Story {i}", "Wire", SENT, None, "", [], []
        )
        for i in range(12)
    }
    entries = tuple(Entry(f"a{i}", "ai") for i in range(1, 12))
    layout = Layout(
        ("ai",), (Section(None, (Entry("a0", "ai"),), lead=True), Section(None, entries))
    )
    masthead = replace(Masthead.from_settings(settings), tracked=tracked)
    return DigestRenderer(masthead).render(EditionKind.DAILY, "2026-11-30", layout, articles)


@pytest.mark.parametrize(
    "base",
    [
        "https://digest.example.com",
        "https://news.example.com/" + "newsletters/" * 6 + "digest",
        "https://example.com/news&views",  # escaped in the HTML: the general path
        "https://example.com/list=tech",  # "=" is quoted-printable's escape: the general path
    ],
)
def test_each_copy_carries_its_own_whole_links_whatever_the_base_url(
    env: dict[str, str], base: str
) -> None:
    """Short links go in as one quoted-printable line each; longer ones are wrapped: either
    way each part decodes to the reader's links, which verify."""

    from digestd.mail.composer import Composer
    from digestd.tokens import Tokens

    settings = load_settings({**env, "DIGESTD_BASE_URL": base})
    template = _twelve_story_daily(settings, tracked=True)
    tokens = Tokens(settings.secret_keys)
    composer = Composer(settings, tokens)
    data = composer.compose(
        template, message_id="<m@x>", public_id="p", email="r@example.com", delivery_id=987654
    )
    text, html = parts(parse(data))
    pattern = re.escape(base) + r"/c/([0-9]+\.[0-9]+\.[A-Za-z0-9_-]{8})"
    in_text = re.findall(pattern, text)
    assert re.findall(pattern.replace("&", "&amp;"), html) == in_text
    assert [tokens.read_click(token) for token in in_text] == [(987654, n) for n in range(1, 13)]
    # Valid quoted-printable: an "=" in the body starts an escape or a soft break, never
    # text (lenient decoders, Python's among them, let a bare one through; others do not).
    body = data.split(b"\r\n\r\n", 1)[1]
    lines = [line for line in body.split(b"\r\n") if not line.startswith((b"--", b"Content-"))]
    assert not [line for line in lines if re.search(rb"=(?![0-9A-F]{2}|$)", line)]


@pytest.mark.parametrize("tracked", [True, False], ids=["tracked", "untracked"])
@pytest.mark.parametrize(
    "base",
    [
        "https://digest.example.com",
        "https://news.example.com/" + "newsletters/" * 6 + "digest",  # clicks: general path
    ],
)
def test_the_sending_path_makes_the_same_bytes_as_the_general_one(
    env: dict[str, str], base: str, tracked: bool
) -> None:
    """Composing for a base URL with nothing to escape fills the whole message from links
    encoded once (Composer._encoded); it must give what the general path gives, byte for
    byte, whatever the tokens' lengths."""
    from digestd.mail.composer import Composer
    from digestd.tokens import Tokens

    settings = load_settings({**env, "DIGESTD_BASE_URL": base})
    template = _twelve_story_daily(settings, tracked=tracked)
    tokens = Tokens(settings.secret_keys)
    fast, general = (Composer(settings, tokens, clock=lambda: 1_796_022_000.0) for _ in "ab")
    general.links.plain = False
    assert fast.links.plain
    for n, public_id in enumerate(["p", "Zq8-x_Y3mW0aB1cD2eF3gH", "r" * 40, "a.b/c"]):
        delivery_id = 10**n + n
        message_id = fast.message_id("daily", "2026-11-30", delivery_id)
        copies = [
            composer.compose(
                template,
                message_id=message_id,
                public_id=public_id,
                email=f"reader{n}@exämple.com",
                delivery_id=delivery_id,
            )
            for composer in (fast, general)
        ]
        assert copies[0] == copies[1]


def test_a_link_whose_line_would_start_with_a_dot_is_encoded_as_text_is() -> None:
    from digestd.mail.template import encoded_link
    from digestd.mail.wire import _qp

    for url in ["https://x.example/" + "a" * 57 + ".b", "https://x.example/" + "a" * 200]:
        assert encoded_link(url.encode()) == _qp(url)
    assert b"\r\n." not in encoded_link(b"https://x.example/" + b"a" * 57 + b".b")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DIGESTD_TRACK_CLICKS", "everything"),
        ("DIGESTD_TRACK_CLICKS", "opens"),
        ("DIGESTD_SUNSET_WEEKS", "0"),
        ("DIGESTD_SUNSET_WEEKS", "twelve"),
        ("DIGESTD_SUNSET_WEEKS", "521"),
    ],
)
def test_a_bad_tracking_setting_names_its_variable(
    env: dict[str, str], name: str, value: str
) -> None:
    from digestd.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        load_settings({**env, name: value})
    assert name in str(raised.value)
    assert load_settings({**env, "DIGESTD_TRACK_CLICKS": " Reader "}).tracks_readers


def test_clicks_arriving_together_are_all_recorded_before_their_answers(web: WebRig) -> None:
    """Clicks that come while a group is in the database go in the next group together."""
    import asyncio

    import httpx

    links = tracked_links(send_daily(web)) * 10

    async def at_once() -> list[int]:
        transport = httpx.ASGITransport(app=web.client.app, client=("203.0.113.10", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            answers = await asyncio.gather(*(client.get(link) for link in links))
        return [answer.status_code for answer in answers]

    assert web.portal.call(at_once) == [303] * 50
    assert count(web, ClickInbox) == 50
