"""Throttle signup emails per canonical mailbox and in total, in a table every process
shares (``victim+1@…``, ``v.i.c.t.i.m@googlemail.com`` are one inbox); the per-address
timestamp it replaces counted each spelling apart.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_mail_throttle")),
    )
    # A plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): a batch copy of subscribers
    # would drop the old table, and its ON DELETE CASCADE would empty the deliveries.
    op.drop_column("subscribers", "confirmation_sent_at")


def downgrade() -> None:
    op.add_column(
        "subscribers",
        sa.Column("confirmation_sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.drop_table("mail_throttle")
