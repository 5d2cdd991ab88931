"""Each report in the bounce ledger names the message it came in (``bounces.report_id``): a
report an MTA hands over twice (its LMTP delivery retried after a lost reply, a DSN posted
again) is known as the same report even when it names a reader rather than a delivery.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bounces", sa.Column("report_id", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_bounces_report_id"), "bounces", ["report_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bounces_report_id"), table_name="bounces")
    op.drop_column("bounces", "report_id")
