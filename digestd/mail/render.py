"""Every email is one template family: ``KIND.subject``, ``KIND.txt`` and ``KIND.mjml``.

``render(kind, context)`` fills all three with Jinja2, compiles the MJML with mjml-python
(no web fonts) and inlines CSS with css-inline (remote stylesheets off): rendering never
touches the network. A new kind of email costs a template family and no code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from digestd.content.text import first_unshowable, showable
from digestd.mail.plaintext import wrap
from digestd.resources import templates_dir

if TYPE_CHECKING:
    from jinja2 import Environment

# Jinja2, mjml-python and css-inline (~0.1 s to import) load at the first render, not with
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
    if isinstance(value, str) and first_unshowable(value) is not None:
        return Markup(showable(value)) if isinstance(value, Markup) else showable(value)
    return value


def compile_mjml(source: str) -> str:
    from css_inline import CSSInliner
    from mjml import mjml2html

    # fonts={} stops MJML from adding a Google Fonts <link>; comments are dead weight.
    html = mjml2html(source, disable_comments=True, fonts={})
    # MJML's own reset styles are already applied where they matter; inlining them would
    # repeat "border-collapse:…; mso-table-lspace:…" on every cell (~20 % of the size).
    # Only our <mj-style> rules (the last <style> block) are inlined.
    last = html.rfind("<style")
    html = html[:last].replace("<style", f"<style {_SKIP}") + html[last:]
    # Every <style> stays: @media rules (mobile, dark mode) cannot be inlined, and the
    # dark-mode rules keep their !important to beat the inline light colours.
    inlined: str = CSSInliner(keep_style_tags=True, load_remote_stylesheets=False).inline(html)
    inlined = _escape_brackets_in_attributes(inlined.replace(f" {_SKIP}", ""))
    return (
        inlined
        if inlined.lstrip().lower().startswith("<!doctype")
        else "<!doctype html>\n" + inlined
    )


_SKIP = 'data-css-inline="ignore"'
# An attribute value with < or > in it. The HTML5 serializer writes them as they are there
# (valid, and harmless inside quotes; text nodes get &lt; &gt;), but a story's title in an
# aria-label would then put "<script" in the bytes, which naive filters and spam rules
# look for: they are written as references, as the text is.
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
