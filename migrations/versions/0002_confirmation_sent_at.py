"""Remember when the last confirmation email went to each subscriber, so a signup form
cannot be used to flood someone's inbox (at most one confirmation per address per window).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confirmation_sent_at", sa.DateTime(timezone=True), nullable=True)
        )


# A plain ALTER TABLE, not a batch: SQLite's batch copy drops the table, and with foreign
# keys on that deletes every reader's categories and queue rows (ON DELETE CASCADE).
def downgrade() -> None:
    op.drop_column("subscribers", "confirmation_sent_at")
