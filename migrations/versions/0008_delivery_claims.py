"""Deliveries record which worker claimed them (``host/boot/pid/start``), so a restarted
worker on the same host takes over its dead predecessor's claims at once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE: a batch copy of deliveries on SQLite would be a full rewrite of the
# biggest table for one nullable column.
def upgrade() -> None:
    op.add_column("deliveries", sa.Column("claimed_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "claimed_by")
