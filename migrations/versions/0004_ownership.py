"""ownership: workers with heartbeats, document and training-job owners, warnings, history, cancel

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=50), nullable=False),
        sa.Column("device", sa.String(length=50), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("claim_size", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("crashes_alone", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("warning", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("history", sa.JSON(), nullable=True))
        batch_op.create_index("ix_documents_status_owner", ["status", "owner"], unique=False)
    # A done document's `error` used to hold its warning (a window that failed).
    op.execute("UPDATE documents SET warning = error, error = NULL WHERE status = 'done' AND error IS NOT NULL")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("cancelled_at")
    op.execute("UPDATE documents SET error = warning WHERE status = 'done' AND warning IS NOT NULL")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_status_owner")
        batch_op.drop_column("history")
        batch_op.drop_column("warning")
        batch_op.drop_column("crashes_alone")
        batch_op.drop_column("claim_size")
        batch_op.drop_column("owner")
    op.drop_table("workers")
