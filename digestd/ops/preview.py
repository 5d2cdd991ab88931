"""``digestd preview``: an edition as a reader of some categories would get it, sending nothing;
and one reader's next edition (the admin page).

It is made the way a planned digest is: the planner's selection and layout, rendered by
the same :class:`~digestd.mail.digests.DigestRenderer` into the same template the sender
composes from, so what a preview shows is what the edition sends. Nothing is written: no
edition, digest or queue row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.mail.composer import Composer
from digestd.mail.digests import DigestRenderer, load_articles
from digestd.mail.template import MessageTemplate, Personal
from digestd.models import EditionKind, Subscriber
from digestd.planning.interests import profiles
from digestd.planning.layouts import in_site_order
from digestd.planning.learning import Profile
from digestd.planning.planner import Planner, Timing
from digestd.planning.policy import Policy
from digestd.planning.repeats import EarlierDailies
from digestd.planning.schedule import Slot, next_slot


class Parts(Protocol):
    """What a preview needs of the service (:class:`digestd.service.Service` has it)."""

    settings: Settings
    sessions: sessionmaker[Session]
    policy: Policy
    renderer: DigestRenderer
    composer: Composer


@dataclass(frozen=True)
class Edition:
    """A rendered edition nobody is queued for: its slot and its template."""

    slot: Slot
    template: MessageTemplate
    articles: int


def edition_now(
    service: Parts, kind: EditionKind, categories: list[str], now: datetime
) -> Edition | None:
    """The edition a reader of ``categories`` in the default zone gets as of ``now``;
    None when there is nothing to send."""
    planner = Planner(kind, service.policy, service.renderer, now, Timing.NOW)
    slot = planner.slot_for(ZoneInfo(service.settings.default_timezone))
    assert slot is not None  # as of now, always
    return _render(service, planner, slot, categories, frozenset())


def _render(
    service: Parts,
    planner: Planner,
    slot: Slot,
    categories: list[str],
    exclude: frozenset[str],
    reader: Profile | None = None,
) -> Edition | None:
    with service.sessions() as session:
        found = planner.layout_for(session, slot, in_site_order(categories), exclude, reader)
        if found is None:
            return None
        layout = found[0]
        articles = load_articles(session, layout.article_ids())
    template = service.renderer.render(planner.kind, slot.period, layout, articles)
    return Edition(slot, template, len(layout.article_ids()))


def preview(
    service: Parts, kind: EditionKind, categories: list[str], now: datetime, fmt: str
) -> bytes | None:
    """The edition as ``html``, ``text`` or a whole message (``eml``); None when there is
    nothing to send."""
    edition = edition_now(service, kind, categories, now)
    if edition is None:
        return None
    template, period = edition.template, edition.slot.period
    links = service.composer.links.for_subscriber("preview", 0, template.link_names)
    if fmt == "html":
        return template.html(links).encode()
    if fmt == "text":
        return template.text(links).encode()
    return template.compose(
        Personal(
            to="reader@example.com",
            message_id=f"<preview.{kind}.{period}@{service.settings.from_domain}>",
            date=format_datetime(now),
            links=links,
            unsubscribe_mailto=service.composer.links.mailto("preview"),
        )
    )


def next_edition(
    service: Parts, subscriber_id: int, kind: EditionKind, now: datetime
) -> Edition | None:
    """What the reader's next ``kind`` edition holds if nothing more is published: their
    categories and zone, their next send time, their earlier dailies left out as the
    planner leaves them out, their clicks' boosts when they teach their digest. None when it
    would be empty (or there is no such reader)."""
    planner = Planner(kind, service.policy, service.renderer, now, Timing.NOW)
    with service.sessions() as session:
        reader = session.get(Subscriber, subscriber_id)
        if reader is None:
            return None
        categories = reader.category_slugs
        zone = ZoneInfo(reader.timezone)
        exclude = frozenset[str]()
        if kind is EditionKind.DAILY:
            exclude = (
                EarlierDailies(now).sent_to(session, [subscriber_id]).get(subscriber_id, exclude)
            )
        learned = (
            profiles(session, {subscriber_id: in_site_order(categories)}, now)
            if service.policy.learns
            else {}
        )
    slot = next_slot(kind, now, zone, service.policy.send_time(kind))
    return _render(service, planner, slot, categories, exclude, learned.get(subscriber_id))
