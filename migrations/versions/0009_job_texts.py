"""a job's texts are known by their hashes in a table of their own, not by a unique index on the documents

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PostgreSQL writes a new version of a document's row when it is claimed and when it is done, and
    # every index of the table takes an entry for it; the (job_id, sha256) one on a random page. Kept
    # apart, that index is written once per text: marking documents done went from 6.0-6.1 to 4.4-4.6 µs
    # a stored triplet, claiming from 9.1-9.2 to 7.4-7.8 (1 M triplets, 2-core machine; docs/benchmarks.md,
    # run O).
    op.create_table(
        "job_texts",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_texts_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "sha256", name="pk_job_texts"),
    )
    op.execute("INSERT INTO job_texts (job_id, sha256) SELECT DISTINCT job_id, sha256 FROM documents")
    with op.batch_alter_table("documents", schema=None) as batch_op:  # SQLite: the table is rebuilt
        batch_op.drop_constraint("uq_documents_job_sha256", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_documents_job_sha256", ["job_id", "sha256"])
    op.drop_table("job_texts")
