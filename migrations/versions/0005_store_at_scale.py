"""store at scale: (object, predicate) replaces the object index; documents are found by external id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (object, predicate) answers object lookups as the old index did, and predicate + object ones
    # too; keeping both would slow every insert for nothing.
    with op.batch_alter_table("triplets", schema=None) as batch_op:
        batch_op.create_index("ix_triplets_object_predicate", ["object", "predicate"], unique=False)
        batch_op.drop_index("ix_triplets_object")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index("ix_documents_external_id", ["external_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_external_id")
    with op.batch_alter_table("triplets", schema=None) as batch_op:
        batch_op.create_index("ix_triplets_object", ["object"], unique=False)
        batch_op.drop_index("ix_triplets_object_predicate")
