"""Drop deliveries(subscriber_id): the unique (subscriber_id, edition_id) key serves it.

Every lookup by subscriber (the repeat check, suppression, the cascade of an erased
reader) uses the unique key's index, whose leading column is the subscriber. The extra
index only cost writes: a queue row is written three times an edition (queued, sending,
sent), and each write updated this index too.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_subscriber_id", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"], unique=False)
