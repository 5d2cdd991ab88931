"""Feed health: when a feed last worked, and what its last run stored and rejected, so
``digestd feeds list`` (and the admin page) can tell a quiet feed from a broken one.

``failures`` (already there) counts failed polls in a row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feeds", sa.Column("last_success_at", sa.DateTime(timezone=True)))
    op.add_column(
        "feeds", sa.Column("stored_last_run", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "feeds", sa.Column("rejected_last_run", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("feeds", sa.Column("last_item_error", sa.Text()))


def downgrade() -> None:
    for column in ("last_item_error", "rejected_last_run", "stored_last_run", "last_success_at"):
        op.drop_column("feeds", column)
