""" "Who is due" in (send instant, id) order straight from the index: the id joins it.

The planner takes due readers a thousand at a time in (next send instant, id) order, each
batch starting after the last reader of the one before. With the index on (status,
instant) alone, PostgreSQL read every reader of an instant and sorted them by id for each
batch: a 100 000-reader edition whose readers share a send time read 100 000 entries (and
their heap rows) for its first batch, 50 000 on average, ~50–140 ms a batch, 7 s of its
planning. With the id in the index, the order is the index's and the batch starts where
the last one ended. SQLite's indexes end in the rowid already; it gets the same index.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_COLUMNS = ("next_daily_at", "next_weekly_at")


def upgrade() -> None:
    for column in _COLUMNS:
        op.drop_index(f"ix_subscribers_status_{column}", table_name="subscribers")
        op.create_index(f"ix_subscribers_status_{column}", "subscribers", ["status", column, "id"])


def downgrade() -> None:
    for column in _COLUMNS:
        op.drop_index(f"ix_subscribers_status_{column}", table_name="subscribers")
        op.create_index(f"ix_subscribers_status_{column}", "subscribers", ["status", column])
