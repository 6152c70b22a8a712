"""jobs.deaths: attempts whose holder died or lost its lease (GANTRY_MAX_ATTEMPTS)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:00:00

The lease token is the existing `attempt` column and the holder the existing `worker` column
(`host:pid`); fencing needs no other change. Existing rows start at 0 deaths.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deaths", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("deaths")
