"""Claim due deliveries one digest at a time: the claim index gains (digest_id, id).

The sender claims ``ORDER BY next_attempt_at, digest_id, id`` so that a digest's readers
come together and the digest is rendered once per process with a small cache. The new
index serves that order without a sort; it replaces (status, next_attempt_at), of which it
is an extension.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_claim_order",
        "deliveries",
        ["status", "next_attempt_at", "digest_id", "id"],
        unique=False,
    )
    op.drop_index("ix_deliveries_status_next_attempt_at", table_name="deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_status_next_attempt_at",
        "deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.drop_index("ix_deliveries_claim_order", table_name="deliveries")
