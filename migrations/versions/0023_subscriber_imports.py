"""Finished subscriber imports (``subscriber_imports``): the import page's history is the
same in every process and survives a restart (it was kept in the memory of the process
that ran the import).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber_imports",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unsubscribed", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber_imports")),
    )
    op.create_index(
        op.f("ix_subscriber_imports_finished_at"), "subscriber_imports", ["finished_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscriber_imports_finished_at"), table_name="subscriber_imports")
    op.drop_table("subscriber_imports")
