"""Operator sessions that were signed out: a copied admin cookie no longer opens the admin
after "Sign out" (each cookie names its own session; the signed-out ones are listed here
until the cookie would have expired anyway).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_signouts",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_admin_signouts")),
    )


def downgrade() -> None:
    op.drop_table("admin_signouts")
