"""jobs.enqueued_at: when the job's message was last sent to the queue

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 09:00:00

The reaper sends a queued job's message again when it is not on the queue and this is older than
GANTRY_REQUEUE_SECONDS (the message was lost). Existing rows start empty: their `created_at` counts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
