"""jobs.name, job_tags, job_logs: a job's name and tags, and its log lines

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00

- `jobs.name`: free text a user gives at submit (None for the jobs before it).
- `job_tags`: one row per tag of a job, so that `gantry list --tag T` is an indexed lookup on every
  database (a JSON column would need a dialect's own operators).
- `job_logs`: the job's own log lines and the infrastructure errors it met, recorded by its worker
  (gantry.worker.joblog); `jobs.logs_dropped` counts the lines dropped to keep a job's log bounded.
- An index on (created_at, id) for `list`'s newest-first cursor, and one on parent_job_id for the
  lookups of a job's children (`list --parent`, `delete`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("logs_dropped", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_index("ix_jobs_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_jobs_parent_job_id", ["parent_job_id"], unique=False)

    op.create_table(
        "job_tags",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "tag"),
    )
    with op.batch_alter_table("job_tags", schema=None) as batch_op:
        batch_op.create_index("ix_job_tags_tag", ["tag"], unique=False)

    op.create_table(
        "job_logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.create_index("ix_job_logs_job_id_id", ["job_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_job_logs_job_id_id")
    op.drop_table("job_logs")
    with op.batch_alter_table("job_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_job_tags_tag")
    op.drop_table("job_tags")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_parent_job_id")
        batch_op.drop_index("ix_jobs_created_at_id")
        batch_op.drop_column("logs_dropped")
        batch_op.drop_column("name")
