"""Readers remember when they last changed their topics, frequency or zone by hand: a
confirmation link made before then no longer puts the signup's choices back.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preferences_at", sa.DateTime(timezone=True), nullable=True))


# A plain ALTER TABLE, not a batch: SQLite's batch copy drops the table, and with foreign
# keys on that deletes every reader's categories and queue rows (ON DELETE CASCADE).
def downgrade() -> None:
    op.drop_column("subscribers", "preferences_at")
