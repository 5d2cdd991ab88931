"""``digestd preview``: an edition as a reader of some categories would get it, sending nothing.

It is made the way a planned digest is: the planner's selection and layout, rendered by
the same :class:`~digestd.mail.digests.DigestRenderer` into the same template the sender
composes from, so what a preview shows is what the edition sends.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.mail.composer import Composer
from digestd.mail.digests import DigestRenderer, load_articles
from digestd.mail.template import Personal
from digestd.models import EditionKind
from digestd.planning.layouts import in_site_order
from digestd.planning.planner import Planner, Timing
from digestd.planning.policy import Policy


class Parts(Protocol):
    """What a preview needs of the service (:class:`digestd.service.Service` has it)."""

    settings: Settings
    sessions: sessionmaker[Session]
    policy: Policy
    renderer: DigestRenderer
    composer: Composer


def preview(
    service: Parts, kind: EditionKind, categories: list[str], now: datetime, fmt: str
) -> bytes | None:
    """The edition as ``html``, ``text`` or a whole message (``eml``); None when there is
    nothing to send."""
    settings = service.settings
    planner = Planner(kind, service.policy, service.renderer, now, Timing.NOW)
    with service.sessions() as session:
        slot = planner.slot_for(ZoneInfo(settings.default_timezone))
        assert slot is not None  # as of now, always
        found = planner.layout_for(session, slot, in_site_order(categories), frozenset())
        if found is None:
            return None
        layout = found[0]
        articles = load_articles(session, layout.article_ids())
    template = service.renderer.render(kind, slot.period, layout, articles)
    links = service.composer.links.for_subscriber("preview", 0, template.link_names)
    if fmt == "html":
        return template.html(links).encode()
    if fmt == "text":
        return template.text(links).encode()
    return template.compose(
        Personal(
            to="reader@example.com",
            message_id=f"<preview.{kind}.{slot.period}@{settings.from_domain}>",
            date=format_datetime(now),
            links=links,
            unsubscribe_mailto=service.composer.links.mailto("preview"),
        )
    )
