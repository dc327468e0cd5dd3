"""Reading the triplet store as a knowledge graph: one filter, pages with totals, streams, distinct triplets.

Every reader (the `query`, `stats`, `neighbors` and `export` commands, the web view) goes through
these functions, so a filter means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from models.tables import Document, TripletRow

T = TypeVar("T")
STREAM_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class TripletFilter:
    """What to match; None matches anything. Text fields match exactly, or as a substring with ``contains``."""

    subject: str | None = None
    subject_type: str | None = None
    predicate: str | None = None
    object: str | None = None
    object_type: str | None = None
    job_id: int | None = None
    document: str | None = None  # a document's external id (file:line, record id)
    document_id: int | None = None
    adapter: str | None = None
    model: str | None = None
    contains: bool = False

    def text_filters(self) -> dict[str, str]:
        names = ("subject", "subject_type", "predicate", "object", "object_type", "document", "adapter", "model")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True, slots=True)
class TripletRecord:
    """One stored triplet with where it came from."""

    id: int
    subject: str
    subject_type: str
    predicate: str
    object: str
    object_type: str
    subject_start: int | None
    subject_end: int | None
    object_start: int | None
    object_end: int | None
    job_id: int
    document_id: int
    document: str  # the document's external id
    model: str
    adapter: str

    def as_dict(self) -> dict[str, object]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True, slots=True)
class DistinctTriplet:
    """One (subject, types, predicate, object) across every document and job that produced it."""

    subject: str
    subject_type: str
    predicate: str
    object: str
    object_type: str
    count: int  # stored rows
    documents: int  # distinct documents
    jobs: int  # distinct jobs
    first_document_id: int  # provenance: the lowest document id that produced it

    def as_dict(self) -> dict[str, object]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int  # rows matching the filter, whatever the page
    offset: int
    limit: int | None


_RECORD_COLUMNS = (
    TripletRow.id, TripletRow.subject, TripletRow.subject_type, TripletRow.predicate, TripletRow.object,
    TripletRow.object_type, TripletRow.subject_start, TripletRow.subject_end, TripletRow.object_start,
    TripletRow.object_end, Document.job_id, TripletRow.document_id, Document.external_id, TripletRow.model,
    TripletRow.adapter,
)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def apply_filter(statement: Select, flt: TripletFilter) -> Select:
    """``statement`` (which must select from triplets joined to documents) narrowed to ``flt``."""
    columns = {
        "subject": TripletRow.subject, "subject_type": TripletRow.subject_type, "predicate": TripletRow.predicate,
        "object": TripletRow.object, "object_type": TripletRow.object_type, "document": Document.external_id,
        "adapter": TripletRow.adapter, "model": TripletRow.model,
    }
    for name, value in flt.text_filters().items():
        column = columns[name]
        statement = statement.where(
            column.like(f"%{_escape_like(value)}%", escape="\\") if flt.contains else column == value
        )
    if flt.job_id is not None:
        statement = statement.where(Document.job_id == flt.job_id)
    if flt.document_id is not None:
        statement = statement.where(TripletRow.document_id == flt.document_id)
    return statement


def _records(flt: TripletFilter) -> Select:
    return apply_filter(select(*_RECORD_COLUMNS).join(Document, TripletRow.document_id == Document.id), flt)


def find_triplets(session: Session, flt: TripletFilter, *, limit: int | None = 100, offset: int = 0) -> Page[TripletRecord]:
    """One page of matching triplets in storage order, with the total number matching."""
    total = session.scalar(apply_filter(
        select(func.count()).select_from(TripletRow).join(Document, TripletRow.document_id == Document.id), flt
    )) or 0
    statement = _records(flt).order_by(TripletRow.id).offset(offset)
    if limit is not None:
        statement = statement.limit(limit)
    return Page([TripletRecord(*row) for row in session.execute(statement)], total, offset, limit)


def iter_triplets(session: Session, flt: TripletFilter, *, batch: int = STREAM_BATCH) -> Iterator[TripletRecord]:
    """Every matching triplet, in constant memory: keyset pages on the primary key."""
    after = 0
    while True:
        rows = session.execute(_records(flt).where(TripletRow.id > after).order_by(TripletRow.id).limit(batch)).all()
        for row in rows:
            yield TripletRecord(*row)
        if len(rows) < batch:
            return
        after = rows[-1][0]
