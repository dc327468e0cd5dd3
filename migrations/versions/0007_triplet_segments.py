"""triplets live in segments read through the view ``triplets``; documents know whether they have rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.segments import COLUMNS, DEFAULT_CAPACITY, ID_SEQUENCE, VIEW, create_segment, define_view

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The segment's columns as this code writes them: upgraded from 0006 with it, the segment needs no
# 0008 (which drops the fingerprint that 0007's first code still copied).
_ALL = ", ".join(("id", *COLUMNS))


def upgrade() -> None:
    # Why segments: models/segments.py. The store's rows become segment 1 (full already if the store
    # holds `capacity` rows or more, so the next write opens segment 2); its indexes are built after
    # the copy. The foreign key and the (document, fingerprint) unique key go: see segment_table.
    connection = op.get_bind()
    op.create_table(
        "triplet_segments",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triplet_segments")),
    )
    last = connection.exec_driver_sql("SELECT max(id) FROM triplets").scalar() or 0
    if connection.dialect.name == "postgresql":
        op.execute(f"CREATE SEQUENCE {ID_SEQUENCE} START {last + 1}")
    create_segment(connection, number=1, first_id=1, capacity=DEFAULT_CAPACITY[connection.dialect.name],
                   fill=f"SELECT {_ALL} FROM triplets")
    op.drop_table("triplets")
    # Only now: on SQLite a batch ALTER of documents would rebuild the table, and dropping the old one
    # would have cascaded into the triplets (ON DELETE CASCADE). A plain ADD COLUMN rebuilds nothing.
    op.add_column("documents", sa.Column("has_triplets", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("UPDATE documents SET has_triplets = true WHERE id IN (SELECT document_id FROM triplets_0001)")
    define_view(connection, ["triplets_0001"])


def downgrade() -> None:
    connection = op.get_bind()
    # first, while no foreign key points at documents: SQLite rebuilds the table to drop a column
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("has_triplets")
    names = [row[0] for row in connection.exec_driver_sql("SELECT name FROM triplet_segments ORDER BY id")]
    op.execute(f"DROP VIEW {VIEW}")
    op.create_table(
        "triplets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("subject_type", sa.String(length=100), nullable=False),
        sa.Column("predicate", sa.String(length=200), nullable=False),
        sa.Column("object", sa.String(length=500), nullable=False),
        sa.Column("object_type", sa.String(length=100), nullable=False),
        sa.Column("subject_start", sa.Integer(), nullable=True),
        sa.Column("subject_end", sa.Integer(), nullable=True),
        sa.Column("object_start", sa.Integer(), nullable=True),
        sa.Column("object_end", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("adapter", sa.String(length=500), nullable=False),
        sa.Column("prompt_version", sa.String(length=50), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], name=op.f("fk_triplets_document_id_documents"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triplets")),
        sa.UniqueConstraint("document_id", "fingerprint", name="uq_triplets_document_fingerprint"),
    )
    for name in names:
        # 0008's downgrade gave the segments their fingerprints back
        op.execute(f"INSERT INTO triplets ({_ALL}, fingerprint) SELECT {_ALL}, fingerprint FROM {name}")
        op.drop_table(name)
    with op.batch_alter_table("triplets", schema=None) as batch_op:
        batch_op.create_index("ix_triplets_object_predicate", ["object", "predicate"], unique=False)
        batch_op.create_index("ix_triplets_predicate", ["predicate"], unique=False)
        batch_op.create_index("ix_triplets_subject", ["subject", "id"], unique=False)
    if connection.dialect.name == "postgresql":
        op.execute(f"DROP SEQUENCE {ID_SEQUENCE}")
        op.execute("SELECT setval('triplets_id_seq', (SELECT coalesce(max(id), 0) + 1 FROM triplets), false)")
    op.drop_table("triplet_segments")
