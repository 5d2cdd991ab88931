"""An index of the bounce ledger by kind and time (``ix_bounces_kind_created_at``):
retention prunes the old ``unmatched`` reports and reads only those, not every old row
about a reader, which it keeps.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_bounces_kind_created_at"), "bounces", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bounces_kind_created_at"), table_name="bounces")
