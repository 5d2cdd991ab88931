"""Pauses may end by themselves: ``subscribers.paused_until``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


# Plain ALTER TABLE: a batch copy of subscribers on SQLite would drop the table, and its
# ON DELETE CASCADE would take the deliveries with it.
def upgrade() -> None:
    op.add_column(
        "subscribers", sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("subscribers", "paused_until")
