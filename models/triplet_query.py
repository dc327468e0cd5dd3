"""Reading the triplet store as a knowledge graph: one filter, pages with totals, streams, distinct triplets.

Every reader (the `query`, `stats`, `neighbors` and `export` commands, the web view) goes through
these functions, so a filter means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

from sqlalchemy import Select, distinct, func, or_, select
from sqlalchemy.orm import Session

from models import segments
from models.errors import InputError
from models.tables import Document, TripletRow

T = TypeVar("T")
STREAM_BATCH = 5_000
# Entities per neighbour query: well under PostgreSQL's and SQLite's bound-parameter limits.
FRONTIER_CHUNK = 500


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


class _Fields:
    """A record's fields as a dict, for JSON and CSV writers."""

    __slots__ = ()

    def as_dict(self) -> dict[str, object]:
        return {field.name: getattr(self, field.name) for field in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TripletRecord(_Fields):
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


@dataclass(frozen=True, slots=True)
class DistinctTriplet(_Fields):
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


@dataclass(frozen=True, slots=True)
class Edge(_Fields):
    """A distinct triplet found ``hop`` steps from the entity a neighbourhood was asked for."""

    hop: int
    subject: str
    subject_type: str
    predicate: str
    object: str
    object_type: str
    count: int  # stored rows


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int  # rows matching the filter, whatever the page
    offset: int
    limit: int | None


_KEY = (TripletRow.subject, TripletRow.subject_type, TripletRow.predicate, TripletRow.object, TripletRow.object_type)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def apply_filter(statement: Select, flt: TripletFilter) -> Select:
    """``statement`` (which must select from triplets) narrowed to ``flt``.

    Filters on documents (job, external id) become ``document_id IN (…)``: a condition on the
    triplets' own column, which both databases push into every segment of the view, where a join
    made SQLite build the whole view in a temporary table first.
    """
    columns = {
        "subject": TripletRow.subject, "subject_type": TripletRow.subject_type, "predicate": TripletRow.predicate,
        "object": TripletRow.object, "object_type": TripletRow.object_type, "document": Document.external_id,
        "adapter": TripletRow.adapter, "model": TripletRow.model,
    }
    documents = select(Document.id)
    for name, value in flt.text_filters().items():
        column = columns[name]
        condition = column.like(f"%{_escape_like(value)}%", escape="\\") if flt.contains else column == value
        if name == "document":
            documents = documents.where(condition)
        else:
            statement = statement.where(condition)
    if flt.job_id is not None:
        documents = documents.where(Document.job_id == flt.job_id)
    if flt.document is not None or flt.job_id is not None:
        statement = statement.where(TripletRow.document_id.in_(documents))
    if flt.document_id is not None:
        statement = statement.where(TripletRow.document_id == flt.document_id)
    return statement


def _records(rows: Select) -> Select:
    """The records of ``rows`` (a page of triplets, selected whole), each joined to its document, in id order."""
    page = rows.subquery()
    return (
        select(page.c.id, page.c.subject, page.c.subject_type, page.c.predicate, page.c.object, page.c.object_type,
               page.c.subject_start, page.c.subject_end, page.c.object_start, page.c.object_end, Document.job_id,
               page.c.document_id, Document.external_id, page.c.model, page.c.adapter)
        .join(Document, page.c.document_id == Document.id).order_by(page.c.id)
    )


def matching(flt: TripletFilter) -> Select:
    """The triplets matching ``flt``, whole rows, in id order."""
    return apply_filter(select(TripletRow), flt).order_by(TripletRow.id)


def count_triplets(session: Session, flt: TripletFilter) -> int:
    """How many stored triplets match ``flt``."""
    return segments.count_rows(session, apply_filter(select(TripletRow.id), flt).whereclause)


def find_triplets(session: Session, flt: TripletFilter, *, limit: int | None = 100,
                  offset: int = 0) -> Page[TripletRecord]:
    """One page of matching triplets in storage order, with the total number matching."""
    _check_page(limit, offset)
    total = count_triplets(session, flt)
    # The page is cut from the triplets alone and joined to its documents after: every segment then
    # reads its rows in id order from an index and stops at the page's end.
    page = matching(flt).offset(offset)
    if limit is not None:
        page = page.limit(limit)
    return Page([TripletRecord(*row) for row in session.execute(_records(page))], total, offset, limit)


def iter_triplets(session: Session, flt: TripletFilter, *, batch: int = STREAM_BATCH) -> Iterator[TripletRecord]:
    """Every matching triplet, in constant memory: keyset pages on the primary key."""
    after = 0
    while True:
        rows = session.execute(_records(matching(flt).where(TripletRow.id > after).limit(batch))).all()
        for row in rows:
            yield TripletRecord(*row)
        if len(rows) < batch:
            return
        after = rows[-1][0]


def _distinct(flt: TripletFilter) -> Select:
    """Distinct triplets matching ``flt``, most often stored first, then by key (a stable order for pages)."""
    count = func.count()
    statement = select(
        *_KEY, count, func.count(distinct(TripletRow.document_id)), func.count(distinct(Document.job_id)),
        func.min(TripletRow.document_id),
    ).join(Document, TripletRow.document_id == Document.id)
    return apply_filter(statement, flt).group_by(*_KEY).order_by(count.desc(), *_KEY)


def find_distinct(session: Session, flt: TripletFilter, *, limit: int | None = 100,
                  offset: int = 0) -> Page[DistinctTriplet]:
    """One page of distinct triplets across documents and jobs, with the number of distinct triplets matching."""
    _check_page(limit, offset)
    rows, total = [], None
    if limit != 0:
        # The total comes with the page, counted over the groups it was cut from: the matching rows
        # are grouped once, not once for the total and again for the page (the whole store at 1 M
        # triplets: 6.7 -> 4.6 s on SQLite, 3.4 -> 2.6 s on PostgreSQL; docs/benchmarks.md, run L).
        statement = _distinct(flt).add_columns(func.count().over()).offset(offset)
        if limit is not None:
            statement = statement.limit(limit)
        rows = session.execute(statement).all()
        total = rows[0][-1] if rows else None
    if total is None:  # an empty page (nothing matches, or past the end) carries no count
        keys = apply_filter(select(*_KEY), flt).group_by(*_KEY)
        total = session.scalar(select(func.count()).select_from(keys.subquery())) or 0
    return Page([DistinctTriplet(*row[:-1]) for row in rows], total, offset, limit)


def iter_distinct(session: Session, flt: TripletFilter, *, batch: int = STREAM_BATCH) -> Iterator[DistinctTriplet]:
    """Every distinct triplet in ``find_distinct``'s order, in constant memory.

    One grouped query read through a server-side cursor (psycopg) or SQLite's lazy cursor: a keyset
    on the group key would aggregate the whole table again for every batch.
    """
    result = session.execute(_distinct(flt), execution_options={"yield_per": batch})
    try:
        for row in result:
            yield DistinctTriplet(*row)
    finally:
        result.close()  # a reader that stops early releases the cursor


def neighbors(session: Session, entity: str, *, depth: int = 1, limit: int = 200) -> list[Edge]:
    """Distinct triplets within ``depth`` hops of ``entity`` (as subject or object), breadth first.

    Hop 1 is every triplet touching the entity, hop 2 every other triplet touching an entity of
    hop 1, and so on. At most ``limit`` edges, the most often stored first within a hop.
    """
    if depth < 1:
        raise InputError("depth", f"must be 1 or more, got {depth}")
    if limit < 1:
        raise InputError("limit", f"must be 1 or more, got {limit}")
    edges: dict[tuple[str, ...], Edge] = {}
    seen, frontier = {entity}, [entity]
    for hop in range(1, depth + 1):
        found: list[Edge] = []
        for start in range(0, len(frontier), FRONTIER_CHUNK):
            fresh = _edges_touching(session, frontier[start:start + FRONTIER_CHUNK], hop, edges, limit - len(edges))
            edges.update((_edge_key(edge), edge) for edge in fresh)
            found += fresh
        frontier = sorted({name for edge in found for name in (edge.subject, edge.object)} - seen)
        seen.update(frontier)
        if not frontier or len(edges) >= limit:
            break
    return list(edges.values())


def _edges_touching(session: Session, entities: list[str], hop: int, known: dict[tuple[str, ...], Edge],
                    wanted: int) -> list[Edge]:
    """Up to ``wanted`` edges touching ``entities`` that are not ``known`` yet."""
    if wanted <= 0:
        return []
    names = set(entities)
    # Edges of earlier hops touching these entities come back too: ask for that many more.
    again = sum(edge.subject in names or edge.object in names for edge in known.values())
    count = func.count()
    statement = (
        select(*_KEY, count)
        .where(or_(TripletRow.subject.in_(entities), TripletRow.object.in_(entities)))
        .group_by(*_KEY).order_by(count.desc(), *_KEY).limit(wanted + again)
    )
    fresh = (Edge(hop, *row) for row in session.execute(statement))
    return [edge for edge in fresh if _edge_key(edge) not in known][:wanted]


def _edge_key(edge: Edge) -> tuple[str, ...]:
    return edge.subject, edge.subject_type, edge.predicate, edge.object, edge.object_type


def _check_page(limit: int | None, offset: int) -> None:
    # PostgreSQL refuses a negative LIMIT or OFFSET, SQLite reads it as none: refused here, alike on both.
    if limit is not None and limit < 0:
        raise InputError("limit", f"must be 0 or more, got {limit}")
    if offset < 0:
        raise InputError("offset", f"must be 0 or more, got {offset}")
