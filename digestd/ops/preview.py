"""``digestd preview``: an edition as a reader of some categories would get it, sending nothing."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from sqlalchemy import select

from digestd.mail.presentation import digest_context
from digestd.mail.template import MessageTemplate, Personal
from digestd.models import Article, EditionKind
from digestd.planning.planner import article_ids, preview_layout
from digestd.service import Service


def preview(
    service: Service, kind: EditionKind, categories: list[str], now: datetime, fmt: str
) -> bytes | None:
    settings = service.settings
    composer = service.composer
    with service.sessions() as session:
        slot, layout = preview_layout(
            session, service.policy, kind, categories, now, settings.default_timezone
        )
        if layout is None:
            return None
        articles = {
            a.id: a
            for a in session.scalars(select(Article).where(Article.id.in_(article_ids(layout))))
        }
    links = composer.links.for_subscriber("preview", delivery_id=0)
    context = digest_context(
        kind,
        slot.local_date,
        layout,
        articles,
        composer.site,
        links=None if fmt == "eml" else links,
    )
    rendered = composer.renderer.render(str(kind), context)
    if fmt == "html":
        return rendered.html.encode()
    if fmt == "text":
        return rendered.text.encode()
    template = MessageTemplate(
        rendered, from_header=composer.from_header, headers=[("List-Id", settings.list_id)]
    )
    return template.compose(
        Personal(
            to="reader@example.com",
            message_id=f"<preview.{kind}.{slot.period}@{settings.from_domain}>",
            date=format_datetime(now),
            links=links,
            unsubscribe_mailto=f"{composer.links.mailto}?subject=unsubscribe",
        )
    )
