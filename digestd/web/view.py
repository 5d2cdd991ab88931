""" "View in browser": the digest a reader was sent, as a web page anyone with the link may see.

The page is the stored template of the email that was sent (not re-rendered from today's
article rows), with the reader's own links taken out: such links get forwarded and
shared, and the page must not hand anyone the reader's address or their unsubscribe,
preferences or erasure controls. Read in a browser it is a web page, so it is led by its
subject as an h1 inside a main landmark, as the archive's copies are.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from digestd.content.categories import ALL, ALL_NAME, CATEGORIES
from digestd.mail.digests import shown_template
from digestd.mail.layout import Layout
from digestd.models import Delivery, Digest, Edition, EditionKind, Subscriber
from digestd.tokens import BadToken, Purpose
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.reader_pages import someone
from digestd.web.shelves import subscribe_path

# The page is our own email: no script at all, images from the articles' hosts.
VIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


# Footer links are tap targets: at least 44 px tall (WCAG 2.5.5, Apple's guidelines).
LINK_STYLE = "color:#1d4ed8;display:inline-block;padding:12px 4px;line-height:20px;"
FEW = 4  # up to this many categories get a link each; more get the archive's index
# The heading a web page of an email gets, by class so the dark scheme can change it.
HEADING_STYLE = """<style>
.page-heading { color: #0f172a; }
@media (prefers-color-scheme: dark) { .page-heading { color: #f1f5f9 !important; } }
</style>"""
HEADING = (
    '<h1 class="page-heading" style="max-width:600px;margin:0 auto;padding:12px 16px 0;'
    'box-sizing:border-box;font:700 18px/1.3 Helvetica,Arial,sans-serif;">{}</h1>'
)
_TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)
_HEAD_END = re.compile(r"</head>", re.I)
_BODY_START = re.compile(r"<body\b[^>]*>", re.I)
_BODY_END = re.compile(r"</body>", re.I)


def archive_link(base_url: str, categories: Sequence[str]) -> str:
    """Links to the archive of these categories: All Technology, each of a few, or the index."""
    if set(categories) >= set(CATEGORIES):
        shelves = [(ALL, ALL_NAME)]
    elif 0 < len(categories) <= FEW:
        shelves = [(c, CATEGORIES[c]) for c in categories if c in CATEGORIES]
    else:
        shelves = []
    if not shelves:
        return f'<a href="{html.escape(base_url)}/archive" style="{LINK_STYLE}">Past editions</a>'
    links = " · ".join(
        f'<a href="{html.escape(f"{base_url}/archive/{slug}")}" style="{LINK_STYLE}">'
        f"{html.escape(name)}</a>"
        for slug, name in shelves
    )
    return f"Past editions: {links}"


def signup_path(categories: Sequence[str], kind: str) -> str:
    """The signup page prefilled with a digest's categories and kind: whoever was shared a
    copy signs up for what they read, as from an archive page."""
    if set(categories) >= set(CATEGORIES):
        chosen = ALL
    else:
        chosen = ",".join(c for c in categories if c in CATEGORIES)
    return subscribe_path(chosen, EditionKind(kind)) if chosen else "/subscribe"


def public_footer(w: Web, categories: Sequence[str], kind: str) -> str:
    """What a web copy shows where the email had the reader's own links."""
    site = html.escape(w.settings.site_name)
    signup = html.escape(w.settings.base_url + signup_path(categories, kind))
    return (
        f"This is a web copy of a {site} digest. The links to manage a subscription are in "
        f"each digest email.<br>{archive_link(w.settings.base_url, categories)}"
        f' · <a href="{signup}" style="{LINK_STYLE}">Get these digests</a>'
    )


def subject_of(page: str) -> str:
    """The email's subject: MJML writes it as the document's <title>."""
    found = _TITLE.search(page)
    return html.unescape(found[1]).strip() if found else ""


def as_web_page(
    page: str, title: str | None, heading: str, *, head: str = "", nav: str = ""
) -> str:
    """An email's HTML as a page of its own: ``title`` for the tab (None: the subject),
    ``head`` and ``nav`` added, and the email inside a <main> led by an h1 (its own headings
    start at h2, and a screen reader jumps to the main landmark). The email's markup stays
    byte for byte."""
    heading_html = HEADING.format(html.escape(heading))
    if title is not None:
        page = _TITLE.sub(lambda _: f"<title>{html.escape(title)}</title>", page, count=1)
    page = _HEAD_END.sub(lambda m: head + HEADING_STYLE + "\n" + m[0], page, count=1)
    page = _BODY_START.sub(lambda m: m[0] + nav + "<main>" + heading_html, page, count=1)
    return _BODY_END.sub(lambda m: "</main>" + m[0], page, count=1)


def _page(w: Web, public_id: str, delivery_id: int) -> str | None:
    with w.sessions() as session:
        found = session.execute(
            select(Delivery.digest_id, Digest.layout, Edition.kind)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .join(Digest, Digest.id == Delivery.digest_id)
            .join(Edition, Edition.id == Digest.edition_id)
            .where(Delivery.id == delivery_id, Subscriber.public_id == public_id)
        ).first()
        if found is None:
            return None
        digest_id, layout, kind = found
        template = shown_template(session, w.service.renderer, digest_id)
    if template is None:
        return None
    categories = Layout.from_json(layout).categories
    page = template.html({}, personal=public_footer(w, categories, kind))
    return as_web_page(page, None, subject_of(page))


async def view(request: Request) -> Response:
    w = web(request)
    try:
        payload = w.tokens.read(Purpose.VIEW, request.path_params["token"])
        public_id, _, delivery = payload.partition("/")
        delivery_id = int(delivery)
        someone(public_id)
    except (BadToken, ValueError) as exc:  # ExpiredToken is a BadToken
        raise WebError(400, "This link is not valid or has expired.", title="Invalid link") from exc
    page = await w.db(_page, w, public_id, delivery_id)
    if page is None:
        raise WebError(410, "This edition is no longer available.", title="No longer available")
    response = HTMLResponse(page)
    response.headers["Content-Security-Policy"] = VIEW_CSP
    return response


ROUTES = [Route("/view/{token}", view, methods=["GET"])]
