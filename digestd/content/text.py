"""Characters no digest can carry: the C0 controls other than tab, line feed and carriage
return, U+FFFE and U+FFFF, and lone surrogates. XML 1.0 cannot hold them, so MJML refuses
a digest with one anywhere in it, and no mail client would show them anyway.

Articles sent to the API or imported from a file are refused with the field named
(:mod:`digestd.content.articles`); feed text is the feed's own, so they are dropped from it
(:mod:`digestd.content.feeds`); and rendering drops any that are already stored
(:mod:`digestd.mail.render`), so a row from before they were refused cannot fail a digest.
"""

from __future__ import annotations

import re

UNSHOWABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def first_unshowable(value: str) -> str | None:
    """The first such character in ``value``, or None."""
    found = UNSHOWABLE.search(value)
    return found.group() if found else None


def showable(value: str) -> str:
    """``value`` without them."""
    return UNSHOWABLE.sub("", value)
