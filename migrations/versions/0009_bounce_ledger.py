"""The bounce ledger: one row per synchronous refusal and per report (kind, code,
diagnostic, reporting MTA, how it came). Soft bounces are counted from it; the
``soft-bounce:`` prefix deliveries carried in ``last_error`` becomes ledger rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("reporting_mta", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_bounces_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_bounces_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounces")),
    )
    op.create_index(
        "ix_bounces_subscriber_id_created_at", "bounces", ["subscriber_id", "created_at"]
    )
    op.create_index("ix_bounces_delivery_id", "bounces", ["delivery_id"])
    op.create_index("ix_bounces_created_at", "bounces", ["created_at"])
    # Soft bounces recorded the old way keep counting towards a run.
    op.execute(
        "INSERT INTO bounces (delivery_id, subscriber_id, kind, diagnostic, source, channel, "
        "created_at) SELECT id, subscriber_id, 'soft', substr(last_error, 1, 1000), "
        "CASE WHEN status = 'failed' THEN 'smtp' ELSE 'dsn' END, "
        "CASE WHEN status = 'failed' THEN 'smtp' ELSE 'api' END, "
        "coalesce(sent_at, next_attempt_at) FROM deliveries "
        "WHERE last_error LIKE 'soft-bounce:%'"
    )


def downgrade() -> None:
    op.drop_index("ix_bounces_created_at", table_name="bounces")
    op.drop_index("ix_bounces_delivery_id", table_name="bounces")
    op.drop_index("ix_bounces_subscriber_id_created_at", table_name="bounces")
    op.drop_table("bounces")
