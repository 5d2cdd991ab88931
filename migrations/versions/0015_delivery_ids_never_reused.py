"""A queue row's id, and a feed's, is never handed out twice, on SQLite too
(``AUTOINCREMENT``).

The bounce address, the Message-ID and the tracked links of an email name its queue row by
id. SQLite gives a new row the highest id plus one, so after an erasure deleted the newest
rows the next reader's email got the erased reader's ids: a late bounce of the erased
address then suppressed that reader, and old links clicked counted as theirs. PostgreSQL's
sequences never go back; nothing changes there. A feed's id is what ``feeds remove ID``
and the admin page's forms name: a removed feed's id given to the next feed added made an
old listing's id remove another feed.

SQLite can only add ``AUTOINCREMENT`` by building the table again. Dropping the old table
with foreign keys on would delete the click marks (``ON DELETE CASCADE``) and blank the
bounce ledger's delivery ids (``SET NULL``), so those are kept aside and put back.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)
COLUMNS = (
    "id, subscriber_id, edition_id, digest_id, status, due_at, next_attempt_at, "
    "lease_expires_at, attempts, last_error, smtp_reply, message_id, sent_at, created_at, "
    "claimed_by"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(autoincrement=True)
        _rebuild_feeds(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_feeds(autoincrement=False)
        _rebuild(autoincrement=False)


def _rebuild_feeds(*, autoincrement: bool) -> None:
    # No table refers to feeds: Alembic's copy of the table loses nothing.
    with op.batch_alter_table(
        "feeds", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def _rebuild(*, autoincrement: bool) -> None:
    op.execute("CREATE TEMP TABLE keep_marks AS SELECT delivery_id, position FROM click_marks")
    op.execute(
        "CREATE TEMP TABLE keep_refs AS SELECT id, delivery_id FROM bounces"
        " WHERE delivery_id IS NOT NULL"
    )
    _create("deliveries_rebuilt", autoincrement)
    op.execute(f"INSERT INTO deliveries_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM deliveries")
    op.drop_table("deliveries")
    op.rename_table("deliveries_rebuilt", "deliveries")
    op.create_index("ix_deliveries_edition_id_status", "deliveries", ["edition_id", "status"])
    op.create_index(
        "ix_deliveries_claim_order", "deliveries", ["status", "next_attempt_at", "digest_id", "id"]
    )
    op.execute("INSERT OR IGNORE INTO click_marks SELECT delivery_id, position FROM keep_marks")
    op.execute(
        "UPDATE bounces SET delivery_id ="
        " (SELECT k.delivery_id FROM keep_refs k WHERE k.id = bounces.id)"
        " WHERE id IN (SELECT id FROM keep_refs)"
    )
    op.execute("DROP TABLE keep_marks")
    op.execute("DROP TABLE keep_refs")


def _create(name: str, autoincrement: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("due_at", WHEN, nullable=False),
        sa.Column("next_attempt_at", WHEN, nullable=False),
        sa.Column("lease_expires_at", WHEN, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("smtp_reply", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("sent_at", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name="fk_deliveries_digest_id_digests",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["editions.id"],
            name="fk_deliveries_edition_id_editions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_deliveries_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("subscriber_id", "edition_id", name="uq_deliveries_subscriber_edition"),
        sqlite_autoincrement=autoincrement,
    )
