"""SQLAlchemy 2.0 tables of the triplet store. Schema changes go through Alembic."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, Enum, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored moment, timezone-aware: SQLite hands back naive datetimes, and everything stored is UTC."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Status(str, enum.Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


FINISHED = (Status.done, Status.failed)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    documents: Mapped[list[Document]] = relationship(back_populates="job")


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_job_status", "job_id", "status"),
        Index("ix_documents_status_owner", "status", "owner"),
        Index("ix_documents_external_id", "external_id"),  # the readers' --document filter
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[Status] = mapped_column(
        Enum(Status, name="document_status", native_enum=False, length=16), default=Status.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker holding the document while it runs; it is alive while its heartbeat is fresh.
    owner: Mapped[str | None] = mapped_column(String(100))
    # How many documents were claimed together with it: a claim that dies with its worker is
    # split before it runs again, so a document that kills workers ends up alone, and is charged.
    claim_size: Mapped[int | None] = mapped_column(Integer)
    crashes_alone: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Whether triplets of this document may be stored: only then does storing it again delete
    # old rows first (a search of every segment that a first run skips).
    has_triplets: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)  # why a failed document failed
    warning: Mapped[str | None] = mapped_column(Text)  # what a done document is missing (a window failed)
    # Earlier endings of a document run again by `requeue --failed`: [{"status", "error", "at"}].
    history: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    raw_output: Mapped[str | None] = mapped_column(Text)
    # Triplets the model produced that failed the schema or grounding checks, with reasons.
    rejected: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    job: Mapped[Job] = relationship(back_populates="documents")
    triplets: Mapped[list[TripletRow]] = relationship(back_populates="document")


class JobText(Base):
    """A text a job holds, by its hash: submitting it to the job again is skipped (``store.add_documents``).

    Not a unique index on the documents: an index there takes a new entry each time PostgreSQL
    updates a document's row to another version (claimed, done), and this one's inserts land on
    random pages. Out of the documents, marking them done cost 4.4-4.6 µs a stored triplet where it
    cost 6.0-6.1 (1 M triplets, 2-core machine; docs/benchmarks.md, run O).
    """

    __tablename__ = "job_texts"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)


class TripletRow(Base):
    """A stored triplet, read through the view ``triplets`` over the store's segments (``models/segments.py``).

    Rows are written by ``triplet_rows.insert_triplets`` into the newest segment, never through this
    class; the indexes are each segment's (``segments.segment_table``). The foreign key is the ORM's
    join condition only: the segments carry none.
    """

    __tablename__ = "triplets"

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    subject: Mapped[str] = mapped_column(String(500))
    subject_type: Mapped[str] = mapped_column(String(100), default="")
    predicate: Mapped[str] = mapped_column(String(200))
    object: Mapped[str] = mapped_column(String(500))
    object_type: Mapped[str] = mapped_column(String(100), default="")
    subject_start: Mapped[int | None] = mapped_column(Integer)
    subject_end: Mapped[int | None] = mapped_column(Integer)
    object_start: Mapped[int | None] = mapped_column(Integer)
    object_end: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(500))
    adapter: Mapped[str] = mapped_column(String(500), default="")
    prompt_version: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    document: Mapped[Document] = relationship(back_populates="triplets")


class TripletSegment(Base):
    """One segment of the triplet store: its table, the first id it took, how many ids it takes."""

    __tablename__ = "triplet_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(63))
    first_id: Mapped[int] = mapped_column(BigInteger)
    capacity: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_adapters_name_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1000))  # relative to the registry folder
    base_model: Mapped[str] = mapped_column(String(1000))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The promoted adapter of a base model is the one with the latest promotion.
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrainingJob(Base):
    __tablename__ = "training_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[Status] = mapped_column(
        Enum(Status, name="training_status", native_enum=False, length=16), default=Status.pending
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Worker(Base):
    """A worker process: alive while its heartbeat is fresh; what it owns is taken over when it stops."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(50))
    device: Mapped[str] = mapped_column(String(50))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_reason: Mapped[str | None] = mapped_column(Text)
