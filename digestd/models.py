"""The data model (SQLAlchemy 2, typed). Alembic migrations in ``migrations/`` create it.

Vocabulary: a *Subscriber* takes *Editions* (one per kind and local date/week); what one
subscriber gets in an edition is a *Digest* (an ordered set of articles, shared by every
subscriber whose selection came out the same, so it is rendered once); a *Delivery* is one
row per (subscriber, edition) and is the send queue.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names so Alembic migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; digestd uses aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Row ids are INTEGER columns: 32-bit on PostgreSQL, which refuses to even compare a larger
# number with one (SQLite's are 64-bit). A number past this is nobody's id.
MAX_ID = 2**31 - 1


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"  # signed up, not confirmed yet
    ACTIVE = "active"
    PAUSED = "paused"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SuppressionReason(enum.StrEnum):
    """Why an address is never mailed again (``suppressions.reason``)."""

    HARD_BOUNCE = "hard-bounce"
    SOFT_BOUNCES = "soft-bounces"  # a run of soft bounces (readers.bounce_policy)
    COMPLAINT = "complaint"
    ERASED = "erased"  # the reader's own request: a new double opt-in lifts it

    @property
    def refused(self) -> bool:
        """Mail to the address was refused or reported: a new signup cannot undo it."""
        return self is not SuppressionReason.ERASED


class EditionKind(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a worker until lease_expires_at
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to send, or too late to send


class Category(Base):
    __tablename__ = "categories"

    slug: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    position: Mapped[int] = mapped_column(Integer)


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200), default="")
    published_at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(20), default="news")
    why_it_matters: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="", server_default="")
    key_takeaways: Mapped[list[str]] = mapped_column(JSON, default=list)
    companies: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    analysis: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Editors' say (planning.selection): leads every edition of its categories until then,
    # or goes in none. Re-sending the article leaves both as they are.
    pinned_until: Mapped[datetime | None] = mapped_column(index=True)
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    categories: Mapped[list[ArticleCategory]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )


class ArticleCategory(Base):
    __tablename__ = "article_categories"

    article_id: Mapped[str] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(
        ForeignKey("categories.slug"), primary_key=True, index=True
    )


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # What tokens carry: random, so a token reveals neither the email nor the row count.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised
    # Queried by status through the "who is due" indexes below, which start with it.
    status: Mapped[str] = mapped_column(String(20), default=SubscriberStatus.PENDING)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    wants_daily: Mapped[bool] = mapped_column(Boolean, default=False)
    wants_weekly: Mapped[bool] = mapped_column(Boolean, default=False)
    # When topics, frequency or zone were last changed by hand (the preferences page, an
    # operator): a confirmation link made before then keeps them, not the signup's.
    preferences_at: Mapped[datetime | None]
    # The next local send instant not yet handled, in UTC: "who is due" is one indexed query
    # (status first: the query asks for active readers, in send-time order).
    next_daily_at: Mapped[datetime | None]
    next_weekly_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    # Consent record (GDPR art. 7(1): be able to show when and how consent was given).
    consent_at: Mapped[datetime | None]
    consent_source: Mapped[str] = mapped_column(Text, default="")
    consent_ip: Mapped[str | None] = mapped_column(String(64))
    consent_user_agent: Mapped[str | None] = mapped_column(Text)
    consent_wording: Mapped[str | None] = mapped_column(String(40))
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0)
    # A pause with an end: digests resume by themselves at this instant (None: by hand).
    paused_until: Mapped[datetime | None]
    # Engagement (DIGESTD_TRACK_CLICKS=reader, readers.sunset): the last click that looked
    # like a person's; the reader's own switch for learning from their clicks; and where
    # the sunset stands (None, asked, weekly, paused), since when, and whether they took
    # the daily before it moved them (restored by a click).
    last_click_at: Mapped[datetime | None]
    learns: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    sunset_stage: Mapped[str | None] = mapped_column(String(10))
    sunset_at: Mapped[datetime | None]
    sunset_had_daily: Mapped[bool | None] = mapped_column(Boolean)

    categories: Mapped[list[SubscriberCategory]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def category_slugs(self) -> list[str]:
        return [c.category for c in self.categories]

    __table_args__ = (
        # With the id: the planner's batches come in (instant, id) order (migration 0016).
        Index("ix_subscribers_status_next_daily_at", "status", "next_daily_at", "id"),
        Index("ix_subscribers_status_next_weekly_at", "status", "next_weekly_at", "id"),
    )


class SubscriberCategory(Base):
    __tablename__ = "subscriber_categories"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(ForeignKey("categories.slug"), primary_key=True)


class Suppression(Base):
    """Addresses not to mail (bounced, complained; erased until the person signs up again
    and confirms). Only a hash is kept, so erasure leaves no address."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MailThrottle(Base):
    """Signup emails (confirmations, fresh links) sent to one mailbox, or to anyone, in the
    current window: shared by every process, claimed with a guarded UPDATE."""

    __tablename__ = "mail_throttle"

    # sha256 of the canonical mailbox (no address is kept), or "*" for the global cap.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_started_at: Mapped[datetime]
    sent: Mapped[int] = mapped_column(Integer, default=0)
    last_sent_at: Mapped[datetime | None]


class Edition(Base):
    """One kind of digest for one local date (daily) or week (weekly, keyed by its Sunday)."""

    __tablename__ = "editions"
    __table_args__ = (UniqueConstraint("kind", "period", name="uq_editions_kind_period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    period: Mapped[str] = mapped_column(String(10))  # local ISO date of the send
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Digest(Base):
    """A distinct content of an edition; every delivery with the same content shares it."""

    __tablename__ = "digests"
    __table_args__ = (
        UniqueConstraint("edition_id", "content_key", name="uq_digests_edition_content"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    content_key: Mapped[str] = mapped_column(String(64))
    layout: Mapped[dict[str, Any]] = mapped_column(JSON)  # see digestd.mail.layout
    # The rendered message (digestd.mail.template.MessageTemplate.dump), rendered once when
    # the digest was planned; None with ``render_error`` when rendering failed.
    template: Mapped[bytes | None] = mapped_column(LargeBinary)
    render_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArchiveEdition(Base):
    """A public archive edition: the digest a reader following only ``category`` (``all``:
    every category) got for this kind and period, in the default timezone, as published
    once its send time had passed. ``digest_id`` None: nothing to send that time (kept so
    the period is not planned again every tick); such rows are not shown."""

    __tablename__ = "archive_editions"
    __table_args__ = (
        UniqueConstraint("category", "kind", "period", name="uq_archive_editions_shelf"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    category: Mapped[str] = mapped_column(String(40))  # a category slug, or "all"
    kind: Mapped[str] = mapped_column(String(10))
    period: Mapped[str] = mapped_column(String(10))  # local ISO date of the send
    # Indexed: retention asks which digests the archive holds, and deleting a digest
    # looks here for rows to cascade to.
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), index=True
    )
    published_at: Mapped[datetime]


class Delivery(Base):
    """The send queue: one row per (subscriber, edition); that unique key guards exactly-once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "edition_id", name="uq_deliveries_subscriber_edition"),
        # The claim's order: due rows by time, then one digest's readers together (so each
        # digest is rendered once); it also serves everything (status, next_attempt_at) did.
        Index("ix_deliveries_claim_order", "status", "next_attempt_at", "digest_id", "id"),
        Index("ix_deliveries_edition_id_status", "edition_id", "status"),
        # An email's bounce address, Message-ID and links name its row by id: SQLite must not
        # give a deleted (erased) reader's ids to the next rows (migration 0015).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Looked up through the unique (subscriber_id, edition_id) key: no index of its own.
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("digests.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(10), default=DeliveryStatus.QUEUED)
    due_at: Mapped[datetime]  # the local send time, in UTC
    next_attempt_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime | None]  # by the database's clock
    claimed_by: Mapped[str | None] = mapped_column(String(200))  # see digestd.delivery.worker
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # counted when claimed
    last_error: Mapped[str | None] = mapped_column(Text)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BounceEvent(Base):
    """The bounce ledger: every synchronous refusal and every report, with what the policy
    (:mod:`digestd.readers.bounce_policy`) made of it. Soft bounces are counted from here.
    Diagnostics keep the recipient's domain, not the address (see ``readers.ledger``)."""

    __tablename__ = "bounces"
    __table_args__ = (
        Index("ix_bounces_subscriber_id_created_at", "subscriber_id", "created_at"),
        Index("ix_bounces_delivery_id", "delivery_id"),
        Index("ix_bounces_created_at", "created_at"),
        Index("ix_bounces_report_id", "report_id"),
        # Retention finds the old unmatched reports without reading the rows about readers
        # it keeps for ever (migration 0024).
        Index("ix_bounces_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Both kept nullable: an unmatched report names no one; retention prunes deliveries and
    # erasure deletes subscribers, while the ledger's counts stay.
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(20))  # bounce_policy.Kind
    status: Mapped[str | None] = mapped_column(String(20))  # 5.1.1, a bare 550, or abuse
    diagnostic: Mapped[str | None] = mapped_column(Text)
    reporting_mta: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(10))  # smtp | dsn | arf | mail
    channel: Mapped[str] = mapped_column(String(10))  # smtp | api | lmtp
    # Which report it was (readers.bounces.report_id): the same one handed over again
    # changes nothing. None for a synchronous refusal.
    report_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feed(Base):
    """An RSS/Atom feed polled for articles of one category."""

    __tablename__ = "feeds"
    # ``feeds remove ID`` and the admin page name a feed by id: never another's (0015).
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    category: Mapped[str] = mapped_column(ForeignKey("categories.slug"))
    title: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    next_poll_at: Mapped[datetime] = mapped_column(default=utcnow)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # failed polls in a row
    last_error: Mapped[str | None] = mapped_column(Text)  # why the last failed poll failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Health (feeds list, admin): the last poll that worked, and what its items came to.
    last_success_at: Mapped[datetime | None]
    stored_last_run: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rejected_last_run: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_item_error: Mapped[str | None] = mapped_column(Text)  # the last item refused, and why
    # Where its server was reached by the last fetch that worked (None: never fetched). Once
    # outside, an answer from inside is refused (DNS rebinding, feeds.RedirectGuard).
    server_inside: Mapped[bool | None] = mapped_column(Boolean)


class DigestLink(Base):
    """A digest's articles in the order its email numbers them: what a tracked link
    (``/c/...``) names by its position, and what reports count as sent per article."""

    __tablename__ = "digest_links"

    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1: the lead
    article_id: Mapped[str] = mapped_column(String(200), index=True)
    category: Mapped[str] = mapped_column(String(40))  # the one its card shows
    source: Mapped[str] = mapped_column(String(200), default="")


class ClickInbox(Base):
    """Clicks as they arrive, one insert each; settled into ``clicks`` by the next tick
    (:mod:`digestd.readers.clicks`), once a burst of them can be told from a person."""

    __tablename__ = "click_inbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(Integer)  # no key: the row may be pruned
    position: Mapped[int] = mapped_column(Integer)
    clicked_at: Mapped[datetime]


class ClickMark(Base):
    """Which links of one email were clicked (position 0: any of them), so a reader who
    clicks twice is counted once. Goes with its queue row (retention, erasure)."""

    __tablename__ = "click_marks"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)


class Click(Base):
    """One settled click on an article of an edition. ``subscriber_id`` only with
    ``DIGESTD_TRACK_CLICKS=reader`` (and a reader who lets their clicks teach their
    digest); with ``aggregate`` nothing here names a reader."""

    __tablename__ = "clicks"
    __table_args__ = (Index("ix_clicks_subscriber_id_clicked_at", "subscriber_id", "clicked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE")
    )
    article_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(200), default="")
    clicked_at: Mapped[datetime] = mapped_column(index=True)
    scanner: Mapped[bool] = mapped_column(Boolean, default=False)  # part of a link-scanner burst
    first_of_article: Mapped[bool] = mapped_column(Boolean, default=False)  # a unique clicker
    first_of_edition: Mapped[bool] = mapped_column(Boolean, default=False)


class SunsetStep(Base):
    """Each step of a reader's sunset (asked, weekly, paused) and what ended it
    (restored by a click, kept, switched), for their admin page."""

    __tablename__ = "sunset_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]


class SettingSince(Base):
    """Since when a setting has had its value (``track_clicks``: silence is only counted
    while reader clicks were recorded)."""

    __tablename__ = "settings_since"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    since: Mapped[datetime]


class AdminSignout(Base):
    """An operator session signed out before its cookie expired: that cookie is refused
    (:mod:`digestd.web.admin_auth`). Kept until ``expires_at``, when the cookie dies anyway."""

    __tablename__ = "admin_signouts"

    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[datetime]


class SubscriberImport(Base):
    """A finished subscriber import, the command line's or ``/admin/import``'s: its counts
    and first rejected lines, for the import page of every process (see
    :mod:`digestd.readers.import_history`). Nothing here is an address."""

    __tablename__ = "subscriber_imports"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # what the page's URL says
    file_name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(10))  # import_history.Channel
    started_at: Mapped[datetime]
    # Indexed: the page lists the newest, and each new import drops those past the last 50.
    finished_at: Mapped[datetime] = mapped_column(index=True)
    lines: Mapped[int] = mapped_column(Integer)  # data lines read (the header not counted)
    added: Mapped[int] = mapped_column(Integer)
    updated: Mapped[int] = mapped_column(Integer)
    unsubscribed: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    problem: Mapped[str | None] = mapped_column(Text)  # why the file was refused as a whole
    # The first rejected lines: {"line", "field", "problem"}, the file's values left out.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
