"""Daily and weekly editions with 1, 5 and the maximum number of articles, stressed with long
fields, Unicode, emoji, right-to-left text and hostile strings: escaped, under Gmail's clip,
text mirroring HTML (SpamAssassin's MPART_ALT_DIFF must not fire), spam score < 1.0."""

from __future__ import annotations

import asyncio
import re
import subprocess
from html.parser import HTMLParser

import pytest

from digestd.config import parse_smtp_url
from digestd.delivery.transport import SmtpPool
from digestd.mail.presentation import TITLE_CHARS
from digestd.mail.render import RenderedEmail, Renderer
from digestd.mail.template import MessageTemplate, Personal, WireBytes
from digestd.models import EditionKind
from tests.conftest import SmtpSink
from tests.email_samples import (
    HOSTILE,
    SAMPLE_LINKS,
    sample_articles,
    sample_context,
    sample_template,
)
from tests.helpers import parse, parts

SIZES = {EditionKind.DAILY: [1, 5, 10], EditionKind.WEEKLY: [1, 5, 15]}
CASES = [(kind, n) for kind, sizes in SIZES.items() for n in sizes]


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _eml(template: MessageTemplate) -> WireBytes:
    return template.compose(
        Personal(
            to="reader@example.com",
            message_id="<daily.2026-11-29.1@news.example.com>",
            date="Sun, 29 Nov 2026 08:00:00 +0000",
            links=SAMPLE_LINKS,
            unsubscribe_mailto="unsubscribe@news.example.com?subject=unsubscribe",
        )
    )


@pytest.mark.parametrize(("kind", "count"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_edition_is_escaped_complete_and_under_the_clip(
    renderer: Renderer, kind: EditionKind, count: int
) -> None:
    rendered = renderer.render(str(kind), sample_context(kind, count))
    html = rendered.html
    assert len(html.encode()) < 100_000, len(html.encode())
    markup = _Markup()
    markup.feed(html)
    tags = {tag for tag, _ in markup.tags}
    assert "script" not in tags and "iframe" not in tags
    for tag, attrs in markup.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs.get("alt"), attrs  # alt text on every image
            assert (attrs.get("src") or "").startswith("https://cdn.example.com/")
    if count > 5:
        assert "&lt;script&gt;" in html and "&lt;script&gt;" not in rendered.text
        assert HOSTILE in rendered.text  # the text part shows it verbatim, harmlessly
    assert 'dir="auto"' in html  # right-to-left titles lay out right to left
    articles = sample_articles(count)
    for article in articles:
        shown = article.title[: TITLE_CHARS - 1].rsplit(" ", 1)[0]
        assert shown[:60] in rendered.text
        assert article.url in rendered.text
        assert article.url.replace("&", "&amp;") in html
    assert len(re.findall(r"Read the story at", rendered.text)) == count
    if kind is EditionKind.WEEKLY:
        assert "Top story of the week" in rendered.text and "TOP STORY OF THE WEEK" in html


def _spamassassin(data: bytes) -> str:
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=data, capture_output=True, timeout=180, check=True
    )
    return result.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("kind", "count"), [(EditionKind.DAILY, 10), (EditionKind.WEEKLY, 15), (EditionKind.DAILY, 1)]
)
def test_spamassassin_is_happy_and_text_mirrors_html(kind: EditionKind, count: int) -> None:
    report = _spamassassin(_eml(sample_template(kind, count)))
    status = re.search(r"X-Spam-Status: \w+, score=(-?[\d.]+)(.*?)\n(?!\s)", report, re.S)
    assert status is not None
    assert float(status.group(1)) < 1.0, status.group(0)
    assert "MPART_ALT_DIFF" not in status.group(0)


def test_every_edition_arrives_byte_for_byte_through_a_real_server(
    smtp_server: SmtpSink,
) -> None:
    """What the composer makes is what the server stores: line ends, dot lines (stuffed on
    the wire, unstuffed by the server) and all, pipelined through the pool."""
    messages = [_eml(sample_template(kind, n)) for kind, n in CASES]
    dots = RenderedEmail(subject="dots", text=".\n..\n.x\n", html="<p>\n.\n</p>\n")
    messages.append(_eml(MessageTemplate.build(dots, from_header="Tech Pulse <d@example.com>")))
    text = parts(parse(messages[-1]))[0].replace("\r\n", "\n")
    assert text.strip("\n") == ".\n..\n.x"  # dot lines in the content

    async def send_all() -> None:
        pool = SmtpPool(parse_smtp_url(smtp_server.url), size=2)
        try:
            for data in messages:
                await pool.send("bounces+1.x@news.example.com", "reader@example.com", data)
        finally:
            await pool.close()

    asyncio.run(send_all())
    assert [m.data for m in smtp_server.messages] == [bytes(m) for m in messages]
