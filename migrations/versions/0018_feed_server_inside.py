"""Feeds remember where their server was reached: once on the internet, an answer from an
inside address is refused (a name rebound to 127.0.0.1 or the cloud's metadata service).

Feeds added before this learn it at their next poll that works.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_inside", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("server_inside")
