"""Plain-text layout for the text part of every email: lines of at most 78 columns.

RFC 5322 asks for lines of at most 78 characters, and text mail readers show longer ones
as one endless line. A URL is never broken (a broken link does not work): one too long
for a line gets a line of its own, however long. Registered as the Jinja filter ``wrap``
(:mod:`digestd.mail.render`), so templates lay out their text from the data, never by
scraping the HTML.
"""

from __future__ import annotations

import functools
import unicodedata

WIDTH = 78
_URL_STARTS = ("https://", "http://", "mailto:")
_OPENERS = "([{<\"'«“‘"  # what may stand before a URL in running text: "(https://…)"


def columns(text: str) -> int:
    """How many columns ``text`` takes in a fixed-width font: CJK characters take two,
    combining marks none."""
    if text.isascii():
        return len(text)
    total = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return total


def _head(word: str, room: int) -> int:
    """How many characters of ``word`` fit in ``room`` columns (at least one)."""
    used = 0
    for index, char in enumerate(word):
        used += columns(char)
        if used > room:
            return max(index, 1)
    return len(word)


def _is_url(word: str) -> bool:
    return word.lstrip(_OPENERS).startswith(_URL_STARTS)


def wrap_line(text: str, width: int = WIDTH, indent: str = "", first: str | None = None) -> str:
    """One paragraph filled into lines of at most ``width`` columns: each line starts
    with ``indent``, the first with ``first`` (when given) instead."""
    lines: list[str] = []
    line = indent if first is None else first
    used = columns(line)
    fresh = True  # nothing on the line yet but its indent (or ``first``)
    for word in text.split():
        size = columns(word)
        while word:
            room = width - used - (0 if fresh else 1)
            if size <= room:
                line += word if fresh else " " + word
                used += size if fresh else size + 1
                fresh, word = False, ""
            elif not fresh or (_is_url(word) and line != indent):
                lines.append(line)  # start a new line: a URL gets one of its own
                line, used, fresh = indent, columns(indent), True
            elif _is_url(word):
                line += word  # longer than a line: alone on it, whole
                used += size
                fresh, word = False, ""
            else:
                # An over-long word that is no URL (a CJK sentence has no spaces): cut it.
                cut = _head(word, room)
                lines.append(line + word[:cut])
                line, used, word = indent, columns(indent), word[cut:]
                size = columns(word)
    lines.append(line)
    return "\n".join(lines).rstrip()


def wrap(text: object, width: int = WIDTH, indent: str = "", first: str | None = None) -> str:
    """Each line of ``text`` wrapped on its own (blank lines and line breaks are kept);
    ``first`` starts only the very first line."""
    return _wrap(str(text), width, indent, first)


# The same titles and summaries come back in digest after digest of an edition: a tenth of
# rendering a digest's text part went to wrapping them again.
@functools.lru_cache(maxsize=4096)
def _wrap(text: str, width: int, indent: str, first: str | None) -> str:
    out: list[str] = []
    for number, paragraph in enumerate(text.split("\n")):
        if not paragraph.strip():
            out.append("")
            continue
        out.append(wrap_line(paragraph, width, indent, first if number == 0 else None))
    return "\n".join(out)
