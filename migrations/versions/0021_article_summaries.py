"""Articles keep the publisher's summary (``articles.summary``) apart from the editor's
``why_it_matters``: a feed item's description is shown unlabelled, never as "Why it
matters:". What earlier polls stored as why_it_matters moves to the summary.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Feed items' ids (digestd.content.feeds.parse_feed). substr, not LIKE: SQLite's LIKE
# ignores case, and an API article called "FEED-1" is no feed item.
_FEED_ITEM = "substr(id, 1, 5) = 'feed-'"


# Plain ALTER TABLE, as in 0013: a batch copy of articles on SQLite would drop the table,
# and its ON DELETE CASCADE would take the articles' categories with it.
def upgrade() -> None:
    op.add_column("articles", sa.Column("summary", sa.Text(), nullable=False, server_default=""))
    op.execute(
        f"UPDATE articles SET summary = why_it_matters, why_it_matters = '' WHERE {_FEED_ITEM}"
    )


def downgrade() -> None:
    # Back where earlier versions read a feed item's description, so none is lost.
    op.execute(
        f"UPDATE articles SET why_it_matters = summary WHERE {_FEED_ITEM} AND why_it_matters = ''"
    )
    op.drop_column("articles", "summary")
