"""Engagement (SPEC §11): each digest's numbered articles, tracked clicks (an inbox the
click route inserts into, settled clicks, per-email marks that count a reader once), the
reader's learning switch and sunset stage, and the sunset's steps.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "digest_links",
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name=op.f("fk_digest_links_digest_id_digests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest_id", "position", name=op.f("pk_digest_links")),
    )
    op.create_index(op.f("ix_digest_links_article_id"), "digest_links", ["article_id"])
    op.create_table(
        "click_inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("clicked_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_click_inbox")),
    )
    op.create_table(
        "click_marks",
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_click_marks_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", "position", name=op.f("pk_click_marks")),
    )
    op.create_table(
        "clicks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("article_id", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("clicked_at", WHEN, nullable=False),
        sa.Column("scanner", sa.Boolean(), nullable=False),
        sa.Column("first_of_article", sa.Boolean(), nullable=False),
        sa.Column("first_of_edition", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["editions.id"],
            name=op.f("fk_clicks_edition_id_editions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_clicks_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    op.create_index(op.f("ix_clicks_clicked_at"), "clicks", ["clicked_at"])
    op.create_index(op.f("ix_clicks_edition_id"), "clicks", ["edition_id"])
    op.create_index("ix_clicks_subscriber_id_clicked_at", "clicks", ["subscriber_id", "clicked_at"])
    op.create_table(
        "sunset_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_sunset_steps_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sunset_steps")),
    )
    op.create_index(op.f("ix_sunset_steps_subscriber_id"), "sunset_steps", ["subscriber_id"])
    op.create_table(
        "settings_since",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("since", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings_since")),
    )
    # Plain ALTER TABLE (as 0012): a batch copy of subscribers on SQLite would drop the
    # table, and its ON DELETE CASCADE would take the deliveries with it.
    op.add_column("subscribers", sa.Column("last_click_at", WHEN, nullable=True))
    op.add_column(
        "subscribers",
        sa.Column("learns", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column("subscribers", sa.Column("sunset_stage", sa.String(length=10), nullable=True))
    op.add_column("subscribers", sa.Column("sunset_at", WHEN, nullable=True))
    op.add_column("subscribers", sa.Column("sunset_had_daily", sa.Boolean(), nullable=True))


def downgrade() -> None:
    for column in ("sunset_had_daily", "sunset_at", "sunset_stage", "learns", "last_click_at"):
        op.drop_column("subscribers", column)
    op.drop_table("settings_since")
    op.drop_index(op.f("ix_sunset_steps_subscriber_id"), table_name="sunset_steps")
    op.drop_table("sunset_steps")
    op.drop_index("ix_clicks_subscriber_id_clicked_at", table_name="clicks")
    op.drop_index(op.f("ix_clicks_edition_id"), table_name="clicks")
    op.drop_index(op.f("ix_clicks_clicked_at"), table_name="clicks")
    op.drop_table("clicks")
    op.drop_table("click_marks")
    op.drop_table("click_inbox")
    op.drop_index(op.f("ix_digest_links_article_id"), table_name="digest_links")
    op.drop_table("digest_links")
