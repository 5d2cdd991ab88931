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


# Plain ALTER TABLE (SQLite >= 3.35 drops columns too): a batch copy of digests would drop
# the old table, and deliveries.digest_id's ON DELETE SET NULL would orphan the queue.
def upgrade() -> None:
    op.add_column("digests", sa.Column("template", sa.LargeBinary(), nullable=True))
    op.add_column("digests", sa.Column("render_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("digests", "render_error")
    op.drop_column("digests", "template")
