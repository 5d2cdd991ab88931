""" "View in browser": one reader's edition as a web page, with that reader's own links."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from digestd.delivery.sender import Links
from digestd.mail.presentation import Site, digest_context
from digestd.models import Article, Delivery, Digest, Edition, EditionKind, Subscriber
from digestd.planning.planner import article_ids
from digestd.tokens import BadToken, Purpose
from digestd.web.context import Web, web
from digestd.web.errors import WebError

# The page is our own email: no script at all, images from the articles' hosts.
VIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _render(w: Web, public_id: str, delivery_id: int) -> str | None:
    with w.sessions() as session:
        row = session.execute(
            select(Digest, Edition)
            .join(Delivery, Delivery.digest_id == Digest.id)
            .join(Edition, Edition.id == Delivery.edition_id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.id == delivery_id, Subscriber.public_id == public_id)
        ).first()
        if row is None:
            return None
        digest, edition = row
        ids = article_ids(digest.layout)
        articles = {a.id: a for a in session.scalars(select(Article).where(Article.id.in_(ids)))}
        if set(ids) - set(articles):
            return None  # an article was removed since: the edition cannot be shown whole
        settings = w.settings
        context = digest_context(
            EditionKind(edition.kind),
            date.fromisoformat(edition.period),
            digest.layout,
            articles,
            Site(settings.site_name, settings.base_url, settings.postal_address),
            links=Links(settings, w.tokens).for_subscriber(public_id, delivery_id),
        )
    return w.renderer.render(edition.kind, context).html


async def view(request: Request) -> Response:
    w = web(request)
    try:
        payload = w.tokens.read(Purpose.VIEW, request.path_params["token"])
        public_id, _, delivery = payload.partition("/")
        delivery_id = int(delivery)
    except (BadToken, ValueError) as exc:  # ExpiredToken is a BadToken
        raise WebError(400, "This link is not valid or has expired.", title="Invalid link") from exc
    html = await w.db(_render, w, public_id, delivery_id)
    if html is None:
        raise WebError(410, "This edition is no longer available.", title="No longer available")
    response = HTMLResponse(html)
    response.headers["Content-Security-Policy"] = VIEW_CSP
    return response


ROUTES = [Route("/view/{token}", view, methods=["GET"])]
