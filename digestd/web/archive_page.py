"""One archive edition as a web page: the stored digest shown as "view in browser" shows
one (the email as sent, its personal links replaced by a public footer), with a canonical
link, the shelf's feed, and navigation to the previous and next edition and the shelf.

The additions go into the email's own HTML (its ``<head>`` and the start of its
``<body>``), so the edition reads exactly as its readers got it.
"""

from __future__ import annotations

import html

from digestd.mail.template import MessageTemplate
from digestd.web.context import Web
from digestd.web.shelves import KIND_WORDS, Shelved, shelf_name, subscribe_path
from digestd.web.view import LINK_STYLE, as_web_page

# Tap targets of at least 44 px (the footer's links are styled the same, see web.view).
NAV_LINK = "display:inline-block;padding:12px 8px;line-height:20px;"
# Colours by class, not inline, so the dark scheme can change them (as the email's own
# stylesheet does for its cards).
NAV_STYLE = """<style>
.archive-nav { color: #475569; }
.archive-nav a { color: #1d4ed8; }
@media (prefers-color-scheme: dark) {
  .archive-nav { color: #cbd5e1 !important; }
  .archive-nav a { color: #93c5fd !important; }
}
</style>"""


def edition_page(
    w: Web,
    template: MessageTemplate,
    shown: Shelved,
    previous: Shelved | None,
    following: Shelved | None,
) -> str:
    base = w.settings.base_url
    page = template.html({}, personal=archive_footer(w, shown, previous, following))
    feed_title = html.escape(f"{shelf_name(shown.category)} · {w.settings.site_name}")
    head = (
        f'<link rel="canonical" href="{html.escape(base + shown.path)}">\n'
        f'<link rel="alternate" type="application/atom+xml" title="{feed_title}" '
        f'href="{html.escape(f"{base}/archive/{shown.category}.atom")}">\n'
        f"{NAV_STYLE}\n"
    )
    nav = navigation(w, shown, previous, following)
    # MJML always writes a <title> (the subject), a <head> and a <body>.
    title = f"{shown.title} · {w.settings.site_name}"
    return as_web_page(page, title, shown.title, head=head, nav=nav)


def _steps(previous: Shelved | None, following: Shelved | None, kind: str, style: str) -> str:
    steps = []
    if previous is not None:
        steps.append(f'<a rel="prev" href="{previous.path}" style="{style}">← Previous {kind}</a>')
    if following is not None:
        steps.append(f'<a rel="next" href="{following.path}" style="{style}">Next {kind} →</a>')
    return " · ".join(steps)


def navigation(w: Web, shown: Shelved, previous: Shelved | None, following: Shelved | None) -> str:
    """Breadcrumbs to the archive and the shelf, then the previous and next edition."""
    name = html.escape(shelf_name(shown.category))
    crumbs = (
        f'<a href="/archive" style="{NAV_LINK}">{html.escape(w.settings.site_name)} archive</a>'
        f' › <a href="/archive/{shown.category}" style="{NAV_LINK}">{name}</a>'
    )
    steps = _steps(previous, following, KIND_WORDS[shown.kind], NAV_LINK)
    return (
        '<nav class="archive-nav" aria-label="Archive" style="max-width:600px;margin:0 auto;'
        'padding:8px 16px 0;font:14px/1.4 Helvetica,Arial,sans-serif;box-sizing:border-box;">'
        f"<div>{crumbs}</div>" + (f"<div>{steps}</div>" if steps else "") + "</nav>"
    )


def archive_footer(
    w: Web, shown: Shelved, previous: Shelved | None, following: Shelved | None
) -> str:
    """Where the email had the reader's own links: how to get this edition by email, and
    the way on for whoever read to the end (the navigation again)."""
    site = html.escape(w.settings.site_name)
    name = html.escape(shelf_name(shown.category))
    kind = html.escape(KIND_WORDS[shown.kind])
    signup = subscribe_path(shown.category, shown.kind)
    steps = _steps(previous, following, KIND_WORDS[shown.kind], LINK_STYLE)
    return (
        (f"{steps}<br>" if steps else "")
        + f"From the {site} archive: the {name} {kind} as its readers got it.<br>"
        f'<a href="{html.escape(w.settings.base_url + signup)}" style="{LINK_STYLE}">'
        f"Get the {name} {kind} by email</a>"
        f' · <a href="{html.escape(w.settings.base_url)}/archive/{shown.category}" '
        f'style="{LINK_STYLE}">The {name} archive</a>'
    )
