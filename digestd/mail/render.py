"""Every email is one template family: ``KIND.subject``, ``KIND.txt`` and ``KIND.mjml``.

``render(kind, context)`` fills all three with Jinja2 and compiles the MJML with
mjml-python (no web fonts): rendering never touches the network. A new kind of email costs
a template family and no code.

Styles are not inlined after the fact: the templates write each element's style on it
(``_style.mjml``), as mail clients that drop ``<style>`` need, so an inliner would only
parse and re-serialise every digest (half of compiling it) to add nothing. The ``<style>``
blocks stay for the rules that cannot be inline (dark mode, the mobile layout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from digestd.content.text import UNSHOWABLE, showable
from digestd.mail.plaintext import wrap
from digestd.resources import templates_dir

if TYPE_CHECKING:
    from jinja2 import Environment

# Jinja2 and mjml-python (~0.1 s to import) load at the first render, not with
# every process that could render: an idle tick, run by cron each minute, renders nothing.


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or templates_dir() / "email"

    @cached_property
    def _env(self) -> Environment:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        env = Environment(
            loader=FileSystemLoader(self.directory),
            autoescape=select_autoescape(["mjml", "html"], default=False),
            undefined=StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=True,
            auto_reload=False,  # templates ship with digestd: no stat() of each file per render
            finalize=_showable,
        )
        env.filters["wrap"] = wrap  # the text part's lines (see plaintext.py)
        return env

    def render(self, kind: str, context: dict[str, Any]) -> RenderedEmail:
        subject = self._env.get_template(f"{kind}.subject").render(context)
        subject = " ".join(subject.split())  # one line, whatever the data held
        context = {**context, "subject": subject}
        text = self._env.get_template(f"{kind}.txt").render(context)
        mjml = self._env.get_template(f"{kind}.mjml").render(context)
        return RenderedEmail(subject=subject, text=_tidy_text(text), html=compile_mjml(mjml))


def _showable(value: Any) -> Any:
    """Every value a template writes, without the characters MJML (XML) cannot hold: an
    article stored before they were refused must not fail every digest it is in."""
    # Called for every value a template writes (~170 a digest): the pattern's own search,
    # not a helper around it.
    if isinstance(value, str) and UNSHOWABLE.search(value) is not None:
        return Markup(showable(value)) if isinstance(value, Markup) else showable(value)
    return value


def compile_mjml(source: str) -> str:
    from mjml import mjml2html

    # fonts={} stops MJML from adding a Google Fonts <link>; comments are dead weight.
    html = mjml2html(source, disable_comments=True, fonts={})
    if "&lt;" in source or "&gt;" in source:  # only a value escaped by Jinja can hold one
        html = _escape_brackets_in_attributes(html)
    return html if _DOCTYPE.match(html) else "<!doctype html>\n" + html


_DOCTYPE = re.compile(r"\s*<!doctype", re.IGNORECASE)  # not a lowered copy of 90 KB


# An attribute value with < or > in it: harmless inside quotes, but a story's title in an
# aria-label would then put "<script" in the bytes, which naive filters and spam rules
# look for: they are written as references, as the text is. (mjml-python keeps Jinja's
# &lt; and &gt; as they are today; this keeps the promise whatever writes the HTML.) The
# templates write no bracket in an attribute, so only a value Jinja escaped can bring one:
# an email whose source holds neither reference has nothing to scan (90 KB a digest).
_BRACKETED_VALUE = re.compile(r'="[^"<>]*[<>][^"]*"')


def _escape_brackets_in_attributes(html: str) -> str:
    if _BRACKETED_VALUE.search(html) is None:  # nearly always: one scan, no rewriting
        return html
    return _BRACKETED_VALUE.sub(
        lambda value: value[0].replace("<", "&lt;").replace(">", "&gt;"), html
    )


def _tidy_text(text: str) -> str:
    """Strip trailing spaces and collapse runs of blank lines left by template logic."""
    lines = [line.rstrip() for line in text.splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy).strip() + "\n"
