"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('adapters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('base_model', sa.String(length=1000), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapters')),
    sa.UniqueConstraint('name', 'version', name='uq_adapters_name_version')
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_table('documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'done', 'failed', name='document_status', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('raw_output', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_documents_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_documents')),
    sa.UniqueConstraint('job_id', 'sha256', name='uq_documents_job_sha256')
    )
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.create_index('ix_documents_job_status', ['job_id', 'status'], unique=False)

    op.create_table('triplets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('subject_type', sa.String(length=100), nullable=False),
    sa.Column('predicate', sa.String(length=200), nullable=False),
    sa.Column('object', sa.String(length=500), nullable=False),
    sa.Column('object_type', sa.String(length=100), nullable=False),
    sa.Column('subject_start', sa.Integer(), nullable=True),
    sa.Column('subject_end', sa.Integer(), nullable=True),
    sa.Column('object_start', sa.Integer(), nullable=True),
    sa.Column('object_end', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=500), nullable=False),
    sa.Column('adapter', sa.String(length=500), nullable=False),
    sa.Column('prompt_version', sa.String(length=50), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_triplets_document_id_documents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_triplets')),
    sa.UniqueConstraint('document_id', 'fingerprint', name='uq_triplets_document_fingerprint')
    )
    with op.batch_alter_table('triplets', schema=None) as batch_op:
        batch_op.create_index('ix_triplets_object', ['object'], unique=False)
        batch_op.create_index('ix_triplets_predicate', ['predicate'], unique=False)
        batch_op.create_index('ix_triplets_subject', ['subject'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('triplets', schema=None) as batch_op:
        batch_op.drop_index('ix_triplets_subject')
        batch_op.drop_index('ix_triplets_predicate')
        batch_op.drop_index('ix_triplets_object')

    op.drop_table('triplets')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index('ix_documents_job_status')

    op.drop_table('documents')
    op.drop_table('jobs')
    op.drop_table('adapters')
