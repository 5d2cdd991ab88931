"""An archive shelf as an Atom feed (RFC 4287): one entry per edition, its headlines as the
summary.

Written with ElementTree, so every value is escaped; characters XML 1.0 cannot carry at all
(control characters an article's title may hold) are left out, or a feed reader would
refuse the whole document.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from digestd.web.shelves import Headline, Shelved, changed_at

ATOM = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
# ``updated`` of a shelf the archive has not looked at yet (before its first send time).
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


ET.register_namespace("", ATOM)  # the feed's elements without a prefix


def xml_text(value: str) -> str:
    return _NOT_XML.sub("", value)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FeedHead:
    title: str
    self_url: str  # the feed's own address, also its id
    page_url: str  # the shelf's archive page
    author: str  # the site
    site_url: str
    # When the shelf began (``shelves.began``): ``updated`` while it has no edition. The
    # feed has not changed since then; a fixed instant keeps its ETag the same from one
    # request to the next (``now`` would make every poll a download), and unlike the
    # newest edition of another shelf it does not move when this feed did not change.
    began: datetime | None = None


def feed(
    head: FeedHead,
    entries: Sequence[Shelved],
    stories: Mapping[int, list[Headline]],
    base_url: str,
) -> bytes:
    root = ET.Element(f"{{{ATOM}}}feed", {XML_LANG: "en"})
    _text(root, "id", head.self_url)
    _text(root, "title", head.title)
    # A story corrected after publication changes the entry listing it, and so the feed.
    _text(root, "updated", rfc3339(changed_at(entries, stories) or head.began or NEVER))
    author = ET.SubElement(root, f"{{{ATOM}}}author")
    _text(author, "name", head.author)
    _text(author, "uri", head.site_url)
    _link(root, "self", head.self_url, "application/atom+xml")
    _link(root, "alternate", head.page_url, "text/html")
    for shown in entries:
        entry = ET.SubElement(root, f"{{{ATOM}}}entry")
        url = base_url + shown.path
        _text(entry, "id", url)
        _text(entry, "title", shown.title)
        _text(entry, "published", rfc3339(shown.published_at))
        listed = {shown.digest_id: stories.get(shown.digest_id, [])}
        _text(entry, "updated", rfc3339(changed_at([shown], listed) or shown.published_at))
        _link(entry, "alternate", url, "text/html")
        summary = _text(entry, "summary", _summary(stories.get(shown.digest_id, [])))
        summary.set("type", "html")
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def _text(parent: ET.Element, name: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{name}")
    element.text = xml_text(value)
    return element


def _link(parent: ET.Element, rel: str, href: str, media_type: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}link", {"rel": rel, "href": href, "type": media_type})


def _summary(stories: list[Headline]) -> str:
    """The edition's headlines as an HTML list (escaped once here, once more by the XML)."""
    items = "".join(
        f'<li><a href="{escape(s.url)}">{escape(s.title)}</a>'
        + (f" ({escape(s.source)})" if s.source else "")
        + "</li>"
        for s in stories
    )
    return f"<ol>{items}</ol>" if items else "This edition's stories are on its page."
