"""Digests keep their rendered template: rendered once when planned, read by every sender.

``template`` is the composed message (headers, quoted-printable chunks, the names of the
links each recipient fills in), versioned and compressed; ``render_error`` says why a
digest could not be rendered (its deliveries fail with that reason). Digests planned
before this revision have neither and are rendered the first time a sender needs them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("digests") as batch:
        batch.add_column(sa.Column("template", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("render_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("digests") as batch:
        batch.drop_column("render_error")
        batch.drop_column("template")
