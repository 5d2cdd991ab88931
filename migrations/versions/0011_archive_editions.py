"""The public archive: one row per (category or "all", kind, period) published, naming the
digest a reader of only that category got (none when there was nothing to send).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_editions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name=op.f("fk_archive_editions_digest_id_digests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_editions")),
        # (category, kind, period): each shelf's editions in date order, from one index.
        sa.UniqueConstraint("category", "kind", "period", name="uq_archive_editions_shelf"),
    )
    op.create_index(
        op.f("ix_archive_editions_digest_id"), "archive_editions", ["digest_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_archive_editions_digest_id"), table_name="archive_editions")
    op.drop_table("archive_editions")
