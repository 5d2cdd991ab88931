"""Editors' pins and holds: ``articles.pinned_until`` (the article leads every edition of
its categories until then) and ``articles.held`` (it goes in no edition).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, as in 0012: a batch copy of articles on SQLite would drop the table,
# and its ON DELETE CASCADE would take the articles' categories with it.
def upgrade() -> None:
    op.add_column("articles", sa.Column("pinned_until", sa.DateTime(timezone=True)))
    op.add_column(
        "articles",
        sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_articles_pinned_until", "articles", ["pinned_until"])


def downgrade() -> None:
    op.drop_index("ix_articles_pinned_until", table_name="articles")
    op.drop_column("articles", "held")
    op.drop_column("articles", "pinned_until")
