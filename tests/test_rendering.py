"""Daily and weekly editions with 1, 5 and the maximum number of articles, stressed with long
fields, Unicode, emoji, right-to-left text and hostile strings: escaped, under Gmail's clip,
text mirroring HTML (SpamAssassin's MPART_ALT_DIFF must not fire), spam score < 1.0."""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import replace
from datetime import timedelta
from html.parser import HTMLParser

import pytest

from digestd.config import parse_smtp_url
from digestd.content.categories import CATEGORIES
from digestd.delivery.transport import SmtpPool
from digestd.mail.digests import ArticleFields, DigestRenderer
from digestd.mail.plaintext import columns
from digestd.mail.presentation import TITLE_CHARS
from digestd.mail.render import (
    RenderedEmail,
    Renderer,
    _escape_brackets_in_attributes,
    compile_mjml,
)
from digestd.mail.template import MessageTemplate, Personal
from digestd.mail.wire import WireBytes
from digestd.models import EditionKind
from digestd.planning.layouts import layout_of
from digestd.planning.selection import Candidate
from tests.conftest import SmtpSink
from tests.email_samples import (
    HOSTILE,
    MASTHEAD,
    SAMPLE_LINKS,
    SEND,
    SITE,
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
    # Not even inside an attribute's quotes: a title's "<script" in an aria-label would put
    # it in the bytes filters read.
    assert re.search(r'="[^"]*[<>][^"]*"', html) is None
    for tag, attrs in markup.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # one image at most: the lead's, with alt text
    images = [attrs for tag, attrs in markup.tags if tag == "img"]
    assert [i.get("src") for i in images] == ["https://cdn.example.com/img/0.jpg"]
    assert images[0].get("alt") == sample_articles(1)[0].title
    if count > 5:
        assert "&lt;script&gt;" in html and "&lt;script&gt;" not in rendered.text
        assert HOSTILE in rendered.text  # the text part shows it verbatim, harmlessly
    assert 'dir="auto"' in html  # right-to-left titles lay out right to left
    articles = sample_articles(count)
    for article in articles:
        shown = article.title[: TITLE_CHARS - 1].rsplit(" ", 1)[0]
        assert shown[:40] in rendered.text
        assert f"\n{article.url}\n" in rendered.text.replace("    https", "https")
        assert article.url.replace("&", "&amp;") in html
    lead = "Top story of the week" if kind is EditionKind.WEEKLY else "Top story"
    assert rendered.text.count(lead.upper()) == 1 and lead.upper() in html
    # "In this edition" links every headline to its story
    assert rendered.text.count("IN THIS EDITION") == (1 if count > 1 else 0)
    for number in range(1, count + 1 if count > 1 else 1):
        assert html.count(f'href="#story-{number}"') == 1
        assert html.count(f'id="story-{number}"') == 1


def _lines_over(text: str, width: int = 78) -> list[str]:
    """Lines wider than ``width`` columns that are not a URL standing alone."""
    return [
        line
        for line in text.splitlines()
        if columns(line) > width and not re.fullmatch(r"\s*(https?|mailto):\S+", line)
    ]


@pytest.mark.parametrize(("kind", "count"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_text_part_is_wrapped_at_78_columns_with_urls_alone(
    renderer: Renderer, kind: EditionKind, count: int
) -> None:
    template = sample_template(kind, count)
    text = template.text(SAMPLE_LINKS)
    assert not _lines_over(text), _lines_over(text)
    # the reader's links stand alone too, with tokens as long as a real reader's
    real = {name: value + "/" + "x" * 90 for name, value in SAMPLE_LINKS.items() if value}
    real.update(personal_begin="", personal_end="")
    text = template.text(real)
    assert not _lines_over(text), _lines_over(text)
    assert [line for line in text.splitlines() if columns(line) > 78]  # they do run longer


def test_kinds_show_as_badges_and_the_weekly_names_each_category_once(
    renderer: Renderer,
) -> None:
    daily = renderer.render("daily", sample_context(EditionKind.DAILY, 10))
    for label in ("Deal", "Video", "Podcast", "Blog", "Social"):
        assert f">{label.upper()}</span>" in daily.html
        assert re.search(rf"^    \w+ · {label} · ", daily.text, re.M), label
    assert ">NEWS<" not in daily.html and " · News · " not in daily.text
    weekly = renderer.render("weekly", sample_context(EditionKind.WEEKLY, 15))
    context = sample_context(EditionKind.WEEKLY, 15)
    for section in context["sections"]:
        name = section["heading"].upper()
        # the "In this edition" group and the section's head; no card repeats it (the
        # lead, before the sections, shows its own)
        lead = context["lead"]["category_name"].upper() == name
        assert weekly.html.count(f">{name}<") == 2 + lead, name
        assert weekly.text.count(f"== {name} ==") == 1
    # only the lead's meta line names a category
    assert weekly.html.count('class="cat"') == 2


class _Links(HTMLParser):
    """Each link of an email: its class, style, text and the style of a span inside it,
    and whether it sits in the "In this edition" cell."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self._open: dict[str, str] | None = None
        self._in_toc = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "td":
            self._in_toc = found.get("class") == "toc"
        elif tag == "a":
            self._open = {**found, "text": "", "toc": "yes" if self._in_toc else ""}
            self.links.append(self._open)
        elif tag == "span" and self._open is not None:
            self._open.setdefault("span_class", found.get("class", ""))
            self._open.setdefault("span_style", found.get("style", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data


def _links(html: str) -> list[dict[str, str]]:
    parser = _Links()
    parser.feed(html)
    return parser.links


def _css(style: str) -> dict[str, str]:
    pairs = (rule.partition(":") for rule in style.split(";") if rule.strip())
    return {name.strip(): value.strip() for name, _, value in pairs}


def _px(value: str) -> list[int]:
    """ "10px 0 4px" -> [10, 0, 4, 0]: a padding shorthand's top, right, bottom, left."""
    sides = [int(v.removesuffix("px")) for v in value.split()]
    return {1: sides * 4, 2: sides * 2, 3: [*sides, sides[1]], 4: sides}[len(sides)]


def _tall(style: dict[str, str], inner: int) -> int:
    """The height a one-line box of this style takes round ``inner`` px of content."""
    padding = _px(style.get("padding", "0"))
    content = max(inner, int(style.get("min-height", "0px").removesuffix("px")))
    return content + padding[0] + padding[2]


@pytest.mark.parametrize("kind", list(EditionKind))
def test_every_contents_headline_is_whole_in_a_row_link_44_px_tall(
    renderer: Renderer, kind: EditionKind
) -> None:
    """On a phone each headline of "In this edition" wraps rather than ending in an
    ellipsis, and each row is one link at least 44 px tall; it is cut at two lines only
    where a client understands the clamp whole (inside @supports), never inline."""
    count = 15 if kind is EditionKind.WEEKLY else 10
    context = sample_context(kind, count)
    html = renderer.render(str(kind), context).html
    rows = [link for link in _links(html) if link["toc"]]
    titles = [context["lead"]["title"]] + [
        a["title"] for s in context["sections"] for a in s["articles"]
    ]
    assert [" ".join(row["text"].split()) for row in rows] == [
        f"{number}. {' '.join(title.split())}" for number, title in enumerate(titles, 1)
    ]
    assert any(len(title) > 150 for title in titles)  # one that must wrap on any screen
    for row in rows:
        style = _css(row["style"])
        assert style["display"] == "block"  # the whole row is the link
        assert "white-space" not in style and "text-overflow" not in style
        assert "overflow" not in style and "overflow" not in _css(row["span_style"])
        assert _tall(style, int(style["line-height"].removesuffix("px"))) >= 44, style
        assert row["span_class"] == "clamp"
    assert html.count("line-clamp") == 2  # in the @supports block only: none inline
    (block,) = re.findall(r"@supports \(-webkit-line-clamp: 2\) \{([^}]*)\}", html)
    assert ".toc .clamp" in block and "-webkit-line-clamp: 2" in block


@pytest.mark.parametrize("kind", list(EditionKind))
def test_each_contents_link_lands_on_a_named_anchor_and_an_id(
    renderer: Renderer, kind: EditionKind
) -> None:
    """Gmail (web and Android) and Outlook for Windows follow an in-message link only to an
    empty <a name>; Apple Mail and Outlook.com to an id: each story has both, once."""
    html = renderer.render(str(kind), sample_context(kind, 12)).html
    links = _links(html)
    targets = [row["href"].removeprefix("#") for row in links if row["toc"]]
    named = [row["name"] for row in links if "name" in row]
    assert targets and named == targets
    assert all(row["text"] == "" and "href" not in row for row in links if "name" in row)
    for target in targets:
        assert html.count(f'id="{target}"') == 1


def test_the_mute_links_are_alike_chips_each_a_44_px_target(renderer: Renderer) -> None:
    """Each topic's link is a bordered chip in a 44 by 44 px target, all styled alike and
    an even space apart: no min-width centring one short name in blank space."""
    html = renderer.render("daily", sample_context(EditionKind.DAILY, 10)).html
    mutes = [link for link in _links(html) if "/mute/" in link.get("href", "")]
    assert [m["text"] for m in mutes] == [
        "AI",
        "ClimateTech",
        "Cybersecurity",
        "FinTech",
        "Quantum",
        "Robotics",
        "SpaceTech",
    ]
    assert len({(m["class"], m["style"], m["span_style"]) for m in mutes}) == 1
    link, chip = _css(mutes[0]["style"]), _css(mutes[0].get("span_style", ""))
    assert "min-width" not in link and mutes[0].get("span_class") == "chip"
    border = int(chip["border"].split()[0].removesuffix("px"))
    chip_tall = _tall(chip, int(chip["line-height"].removesuffix("px"))) + 2 * border
    assert _tall(link, chip_tall) >= 44
    chip_padding, link_padding = _px(chip["padding"]), _px(link["padding"])
    narrowest = int(chip["min-width"].removesuffix("px")) + chip_padding[1] + chip_padding[3]
    assert narrowest + 2 * border + link_padding[1] + link_padding[3] >= 44
    # between two chips nothing but a space: no separator to space unevenly
    footer = html.split("Mute a topic:", 1)[1].split("</p>", 1)[0]
    assert "·" not in footer and footer.count("</a> <a ") == len(mutes) - 1


def _spamassassin(data: bytes) -> str:
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=data, capture_output=True, timeout=180, check=True
    )
    return result.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize(("kind", "count"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_headers_once_each_and_spamassassin_is_happy_with_text_mirroring_html(
    kind: EditionKind, count: int
) -> None:
    data = _eml(sample_template(kind, count))
    message = parse(data)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert len(message.get_all(name, [])) == 1, name
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    report = _spamassassin(data)
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


def test_brackets_in_attribute_values_are_written_as_references() -> None:
    html = '<img alt="a <script> b" src="x.png"><a title="1 > 0" href="#">1 &lt; 2</a>'
    assert _escape_brackets_in_attributes(html) == (
        '<img alt="a &lt;script&gt; b" src="x.png"><a title="1 &gt; 0" href="#">1 &lt; 2</a>'
    )
    assert _escape_brackets_in_attributes(SAMPLE_HTML) is SAMPLE_HTML  # nothing to rewrite


SAMPLE_HTML = '<p class="meta" style="margin:0">Nothing &amp; <b>bold</b></p>'


def test_a_title_that_spells_out_a_reference_gets_no_bracket_either() -> None:
    """Text written "&lt;script&gt;" escapes to &amp;lt;...: no &lt; in the source, so the
    scan is skipped, and the attribute still holds references only."""
    source = (
        '<mjml><mj-body><mj-section><mj-column><mj-image alt="a &amp;lt;script&amp;gt; '
        '&amp;#60;b" src="https://x.example/y.png" /></mj-column></mj-section></mj-body></mjml>'
    )
    html = compile_mjml(source)
    assert 'alt="a &amp;lt;script&amp;gt; &amp;#60;b"' in html
    assert re.search(r'="[^"]*[<>][^"]*"', html) is None


@pytest.mark.parametrize("notice", ["confirm", "welcome-back", "already", "manage-link"])
def test_signup_emails_text_is_wrapped_too(renderer: Renderer, notice: str) -> None:
    long_link = "https://digest.example.com/confirm/" + "t" * 120
    context = {
        "site": SITE,
        "notice": notice,
        "heading": "Confirm your subscription",
        "preheader": "One click and your first digest is on its way.",
        "topics": "AI, Autonomy, B2B Growth and 23 more",
        "new_topics": "Quantum and Robotics" if notice == "already" else "",
        "also_asked": "the daily digest as well and the Buenos Aires time zone "
        "(America/Argentina/Buenos_Aires)"
        if notice == "already"
        else "",
        "frequency": "the daily digest every morning and the weekly recap on Sundays",
        "zone": "America/Argentina/ComodRivadavia",
        "confirm_url": long_link,
        "expires_days": 7,
        "manage_days": 60,
        "footer_reason": "Someone, hopefully you, asked for Tech Pulse digests at this "
        "address. If it wasn't you, ignore this email: nothing changes unless you follow "
        "its link.",
        "links": {**SAMPLE_LINKS, "preferences": long_link.replace("confirm", "preferences")},
    }
    text = renderer.render("confirm", context).text
    assert not _lines_over(text), _lines_over(text)
    assert f"\n{long_link.replace('confirm', 'preferences')}\n" in text  # a lone URL, whole


def _longest_accepted(i: int, category: str) -> tuple[Candidate, ArticleFields]:
    """An article with every field as long as the article validator lets it be, in text
    that takes three bytes a character (CJK), in its own category."""
    cjk = "量子コンピュータの新しい時代が始まる" * 120
    fields = ArticleFields(
        url=f"https://news.example.com/{i}/" + "segment/" * 60,
        title=(f"{i} " + cjk)[:1000],
        source=("出版社" * 70)[:200],
        published_at=SEND - timedelta(hours=i + 1),
        image_url="https://cdn.example.com/" + "img/" * 100 + "lead.jpg",
        why_it_matters=cjk,
        key_takeaways=[cjk[:2000]] * 8,
        companies=[{"name": ("会社" * 100)[:200], "ticker": "T" * 20}] * 8,
        kind="podcasts",
    )
    candidate = Candidate(
        str(i),
        fields.source + str(i),
        fields.published_at,
        99.0 - i,
        frozenset([category]),
        fields.title,
    )
    return candidate, fields


@pytest.mark.parametrize("kind", [EditionKind.DAILY, EditionKind.WEEKLY])
def test_an_edition_of_the_longest_fields_accepted_still_escapes_the_clip(
    kind: EditionKind,
) -> None:
    """Gmail clips an email whose HTML passes ~102 KB, and the unsubscribe link goes with
    the clipped part. Such an edition is told in fewer words instead; a typical one is not."""
    categories = list(CATEGORIES)[:15]
    made = [_longest_accepted(i, c) for i, c in enumerate(categories)]
    layout = layout_of(kind, [c for c, _ in made], categories)
    articles = {c.id: f for c, f in made}
    for tracked in (True, False):
        masthead = replace(MASTHEAD, tracked=tracked)
        template = DigestRenderer(masthead).render(kind, "2026-11-29", layout, articles)
        _, html = parts(parse(bytes(_eml(template))))
        assert len(html.encode()) < 100_000, (tracked, len(html.encode()))
        assert "Unsubscribe" in html and html.rstrip().endswith("</html>")
    rendered = sample_template(kind, 5)  # long, but within the fullest limits
    _, html = parts(parse(bytes(_eml(rendered))))
    assert html.count('class="point"') == 3 * 4  # every card's three takeaways
