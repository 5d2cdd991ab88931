"""The digest email as inbox providers see it: headers, MIME structure, encoding, size,
escaping, per-recipient substitution, and a local SpamAssassin score under 1.0."""

from __future__ import annotations

import binascii
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from hypothesis import assume, given
from hypothesis import strategies as st
from sqlalchemy import select

from digestd.config import load_settings
from digestd.db import make_engine, make_sessions
from digestd.mail.render import RenderedEmail
from digestd.mail.template import LinkSlots, MessageTemplate, Personal
from digestd.mail.wire import _qp
from digestd.models import Subscriber
from digestd.tokens import Purpose, Tokens
from tests.helpers import SAMPLE_ARTICLE, article, parse, parts, run_cli

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert("x")</script>'


def _digest_files(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    items: list[dict[str, object]],
    readers: str,
) -> list[bytes]:
    """Ingest, import, tick once at SEND into the mail catcher; the caught messages."""
    (tmp_path / "a.json").write_text(json.dumps(items))
    (tmp_path / "r.csv").write_text("email,categories,frequency,timezone\n" + readers)
    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "a.json")) == 0
    with time_machine.travel(SEND - timedelta(days=1), tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "r.csv")) == 0
    assert (
        run_cli(monkeypatch, env, "tick", "--now", (SEND + timedelta(minutes=1)).isoformat()) == 0
    )
    return [p.read_bytes() for p in sorted((Path(env["DIGESTD_DATA_DIR"]) / "mail").glob("*.eml"))]


def _typical_items() -> list[dict[str, object]]:
    items: list[dict[str, object]] = [
        dict(SAMPLE_ARTICLE, published_at="2026-11-29T20:00:00Z", score=40)
    ]
    for i in range(9):
        items.append(
            article(
                f"story-{i}",
                ["ai", "robotics"][i % 2],
                SEND - timedelta(hours=i + 1),
                score=10 - i,
                source=f"Outlet {i % 4}",
            )
        )
    return items


@pytest.fixture
def digest(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path) -> bytes:
    (data,) = _digest_files(
        monkeypatch, env, tmp_path, _typical_items(), 'ann@example.com,"ai,robotics",daily,UTC\n'
    )
    return data


def test_headers_are_each_present_once_and_one_click_ready(digest: bytes) -> None:
    message = parse(digest)
    for name in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ):
        assert len(message.get_all(name) or []) == 1, name
    assert message["To"] == "ann@example.com"
    assert message["From"] == "Tech Pulse <digest@news.example.com>"
    assert re.fullmatch(r".*<[\w.-]+\.digest\.example\.com>", str(message["List-Id"]))
    unsubscribe = str(message["List-Unsubscribe"])
    found = re.fullmatch(
        r"<https://digest\.example\.com/unsubscribe/[\w.-]+>, "
        r"<mailto:(unsubscribe\+[\w-]+\.[\w-]{16})@news\.example\.com\?subject=unsubscribe>",
        unsubscribe,
    )
    assert found is not None, unsubscribe
    assert len(found.group(1)) <= 64  # RFC 5321's limit for a local part
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"].startswith("Meta's Internal Memo Signals AI Comeback")
    # the envelope sender is a VERP address (what the catcher recorded as Return-Path)
    assert re.match(rb"Return-Path: <bounces\+\d+\.[\w-]+@news\.example\.com>", digest)


def test_text_then_html_both_utf8_quoted_printable_within_line_limits(digest: bytes) -> None:
    message = parse(digest)
    assert message.get_content_type() == "multipart/alternative"
    kinds = [p.get_content_type() for p in message.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    for part in message.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    body = digest.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 6.7


def test_text_part_is_written_from_the_data_not_scraped(digest: bytes) -> None:
    text, html = parts(parse(digest))
    assert "<" not in text.replace("<https", "")  # no markup in the text part
    for title in ["Meta's Internal Memo Signals AI Comeback After Rocky Year", "Story story-0"]:
        assert title in text
    assert "Why it matters: Avocado validates" in text
    assert "Tech Pulse Ltd · 1 Market Street" in text
    assert re.search(r"Unsubscribe:\r?\nhttps://digest\.example\.com/unsubscribe/", text)
    # every article link of the HTML (tracked: /c/...) is in the text too
    article_links = set(re.findall(r'href="(https://digest\.example\.com/c/[^"]+)"', html))
    assert len(article_links) == 10 and all(link in text for link in article_links)


def test_html_has_no_remote_fonts_or_css_and_stays_under_the_gmail_clip(digest: bytes) -> None:
    _, html = parts(parse(digest))
    assert "fonts.googleapis" not in html and "<link" not in html.lower()
    assert len(html.encode()) < 100_000
    assert 'name="viewport"' in html and "prefers-color-scheme: dark" in html
    assert "max-width:600px" in html.replace(" ", "")


def test_links_are_personal_and_the_tokens_verify(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    messages = _digest_files(
        monkeypatch,
        env,
        tmp_path,
        _typical_items(),
        "ann@example.com,ai,daily,UTC\nbob@example.com,ai,daily,UTC\n",
    )
    assert len(messages) == 2
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine)() as session:
        ids = {s.email: s.public_id for s in session.scalars(select(Subscriber))}
    engine.dispose()
    tokens = Tokens(load_settings(env).secret_keys)
    seen = set()
    for data in messages:
        message = parse(data)
        text, html = parts(message)
        token = re.search(r"/unsubscribe/([\w.-]+)", text)
        assert token is not None
        assert tokens.read(Purpose.UNSUBSCRIBE, token.group(1)) == ids[str(message["To"])]
        assert f"/unsubscribe/{token.group(1)}" in html
        assert f"/unsubscribe/{token.group(1)}" in str(message["List-Unsubscribe"])
        preferences = re.search(r"/preferences/([\w.-]+)", html)
        assert preferences is not None
        assert tokens.read(Purpose.PREFERENCES, preferences.group(1)) == ids[str(message["To"])]
        seen.add(token.group(1))
        assert "__digestd_" not in text + html  # no placeholder left behind
    assert len(seen) == 2


def test_hostile_article_text_is_escaped_and_cannot_inject_headers(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    items = _typical_items()
    items[0] = dict(
        items[0],
        title=HOSTILE + "\r\nBcc: victim@example.com",
        score=100,
        key_takeaways=[HOSTILE],
        why_it_matters=HOSTILE,
    )
    (data,) = _digest_files(monkeypatch, env, tmp_path, items, "ann@example.com,ai,daily,UTC\n")
    message = parse(data)
    assert message.get_all("Bcc") is None
    assert "\n" not in str(message["Subject"])
    _, html = parts(message)
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


ENCODED_WORD_TITLES = [
    "Big news =?utf-8?q?=0D=0AReply-To:_attacker@evil.example=0D=0ABcc:_v@example.com?= today",
    "Ends the headers =?utf-8?q?=0D=0A=0D=0AInjected_body?= here",
    "A literal =?utf-8?q?x?= stays as written",
    "=?utf-8?b?DQpCY2M6IHZAZXhhbXBsZS5jb20=?=",  # base64 of CRLF "Bcc: v@example.com"
]


@pytest.mark.parametrize("title", ENCODED_WORD_TITLES)
def test_a_title_that_reads_like_an_encoded_word_stays_text_in_the_subject(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path, title: str
) -> None:
    """RFC 2047 decoding would turn =0D=0A inside such a title into a line break: a header
    of the attacker's, or the end of the headers. The subject must read as the title."""
    items = _typical_items()
    items[0] = dict(items[0], title=title, score=100)
    (data,) = _digest_files(monkeypatch, env, tmp_path, items, "ann@example.com,ai,daily,UTC\n")
    message = parse(data)
    assert message.get_all("Bcc") is None and message.get_all("Reply-To") is None
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert len(message.get_all(name) or []) == 1, name
    assert str(message["Subject"]).startswith(title)
    text, html = parts(message)  # the body is still the two parts, text then HTML
    assert text and html


def _compose_with_unsubscribe_link(template: MessageTemplate, link: str) -> bytes:
    return template.compose(
        Personal(
            to="r@example.com",
            message_id="<m@example.com>",
            date="Mon, 30 Nov 2026 07:00:00 +0000",
            links={"unsubscribe": link, "preferences": "", "view": ""},
            unsubscribe_mailto="u@example.com",
        )
    )


def test_substitution_keeps_qp_valid_whatever_the_link_length() -> None:
    slots = LinkSlots()
    unsubscribe = slots.placeholder("unsubscribe")
    rendered = RenderedEmail(
        subject="Ünïcode subject ✓",
        text=f"Héllo\nUnsubscribe: {unsubscribe}\n",
        html=f'<p>x</p><a href="{unsubscribe}">u</a>' + "é" * 300,
    )
    template = MessageTemplate.build(
        rendered, from_header="Tech Pulse <d@example.com>", slots=slots
    )
    link = "https://digest.example.com/unsubscribe/" + "A" * 180
    data = _compose_with_unsubscribe_link(template, link)
    head, body = data.split(b"\r\n\r\n", 1)
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # QP's limit
    assert max(len(line) for line in head.split(b"\r\n")) <= 998  # RFC 5322 2.1.1
    text, html = parts(parse(data))
    assert f"Unsubscribe: {link}" in text
    assert f'href="{link}"' in html and html.rstrip("\n").endswith("é" * 300)
    assert parse(data)["Subject"] == "Ünïcode subject ✓"


def test_only_this_renders_placeholders_are_links() -> None:
    """An article quoting another render's placeholder (or one made up to look like it)
    is text: only this render's random part makes a link slot."""
    slots, other = LinkSlots(), LinkSlots()
    quoted = other.placeholder("unsubscribe")
    text = f"Quoted: {quoted}\nYours: {slots.placeholder('unsubscribe')}\n"
    chunks, names = slots.split(text)
    assert names == ["unsubscribe"]
    assert quoted.encode() in chunks[0]


def _spam_score(data: bytes) -> tuple[float, str]:
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=data, capture_output=True, timeout=120, check=True
    )
    status = re.search(rb"X-Spam-Status: \w+, score=(-?[\d.]+)[^\n]*(?:\n\s[^\n]*)*", result.stdout)
    assert status is not None, result.stdout[:500]
    return float(status.group(1)), status.group(0).decode()


def test_spamassassin_scores_a_typical_digest_below_one(digest: bytes) -> None:
    # Strip the catcher's envelope lines: SpamAssassin should see what a relay receives.
    message = b"\r\n".join(digest.split(b"\r\n")[2:])
    score, status = _spam_score(message)
    assert score < 1.0, status


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("Plain\nUnsubscribe: {U}\n", "https://d.example.com/u/abc.def"),
        # CR, CRLF and a lone LF from article data; lines that start with "."
        ("A\r\nB\rC\n.hidden\n.\n{U}", "https://d.example.com/u/x.y"),
        # A link whose quoted-printable wrapping would put "." at the start of a line
        ("{U}\n", "https://d.example.com/u/" + "A" * 50 + ".B" * 40),
        # A 76-character line starting with ".": escaping it must re-wrap, not overflow
        ("." + "x" * 80 + "\n." + "é" * 30 + "\n{U}", "https://u/.x"),
    ],
    ids=["plain", "stray-line-ends-and-dot-lines", "dot-after-a-soft-break", "long-dot-lines"],
)
def test_composed_messages_are_already_in_smtp_data_form(text: str, link: str) -> None:
    """CRLF only and no line starting with "." (RFC 5321 §4.5.2), so the transport sends
    them untouched; quoted-printable stays within 76 characters and decodes to the text."""
    slots = LinkSlots()
    text = text.replace("{U}", slots.placeholder("unsubscribe"))
    rendered = RenderedEmail(subject="S", text=text, html=text.replace("\n", "<br>\n"))
    template = MessageTemplate.build(
        rendered, from_header="Tech Pulse <d@example.com>", slots=slots
    )
    data = _compose_with_unsubscribe_link(template, link)
    crlf = data.count(b"\r\n")
    assert data.count(b"\n") == crlf and data.count(b"\r") == crlf
    assert not data.startswith(b".") and b"\n." not in data
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    plain = parts(parse(data))[0].replace("\r\n", "\n")
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert plain.strip("\n") == expected.replace(slots.placeholder("unsubscribe"), link).strip("\n")


@given(st.text(alphabet=st.sampled_from("abXY09_./:?&%#~+,;@!$*()'-=é "), min_size=1, max_size=400))
def test_each_link_is_encoded_in_lines_of_at_most_76_that_decode_to_it(link: str) -> None:
    """Links are encoded per recipient by a shortcut for plain URL characters; every link,
    plain or not, ends on a soft break within the line limit and never starts a line with
    "." (the chunks it sits between end on line boundaries)."""
    link = link.strip()  # a link has no edge spaces (binascii runs those lines long)
    assume(link)
    encoded = _qp(link)
    assert encoded.endswith(b"=\r\n")
    lines = encoded.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines), lines
    assert not any(line.startswith(b".") for line in lines)
    assert binascii.a2b_qp(encoded).decode() == link


@pytest.mark.parametrize(
    "to", ["r@example.com", "a-very-long-local-part." * 3 + "reader@subdomain.example.com"]
)
def test_the_per_recipient_headers_are_each_a_plain_header(to: str) -> None:
    from digestd.mail.template import personal_headers
    from digestd.mail.wire import _plain_header

    date, message_id = "Mon, 30 Nov 2026 07:00:00 +0000", "<daily.2026-11-30.7.x@example.com>"
    unsubscribe = "<https://d.example.com/unsubscribe/" + "t" * 80 + ">, <mailto:u@example.com>"
    assert personal_headers(to, date, message_id, unsubscribe) == b"".join(
        [
            _plain_header("To", to),
            _plain_header("Date", date),
            _plain_header("Message-ID", message_id),
            _plain_header("List-Unsubscribe", unsubscribe),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
    )
    with pytest.raises(ValueError, match="line break"):
        personal_headers(to + "\r\nBcc: x@example.com", date, message_id, unsubscribe)
