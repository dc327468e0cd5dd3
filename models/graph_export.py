"""Database-side streams for graph exports that the shared read interface (``triplet_query``) lacks.

An export reads the whole store, for seconds or minutes: it gets sessions of its own that never
hold SQLite's write lock, and its entity list is deduplicated and sorted by the database and read
through one cursor, so the exporting process holds one batch at a time whatever the store's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, select, union
from sqlalchemy.orm import Session

from models.tables import TripletRow
from models.triplet_query import STREAM_BATCH, TripletFilter, apply_filter


@dataclass(frozen=True, slots=True)
class Entity:
    """A subject or object of at least one matching triplet, with one type it was given."""

    name: str
    type: str  # "" where the extractor gave none; a name given two types is two entities


def _entities(flt: TripletFilter) -> Select:
    def side(name, kind) -> Select:  # type: ignore[no-untyped-def]
        return apply_filter(select(name.label("name"), kind.label("type")), flt)

    both = union(side(TripletRow.subject, TripletRow.subject_type), side(TripletRow.object, TripletRow.object_type))
    pairs = both.subquery()
    # Sorted by name: the N-Triples writer labels a name once by comparing it with the previous one.
    return select(pairs.c.name, pairs.c.type).order_by(pairs.c.name, pairs.c.type)


def iter_entities(session: Session, flt: TripletFilter, *, batch: int = STREAM_BATCH) -> Iterator[Entity]:
    """Every distinct (name, type) among the subjects and objects of triplets matching ``flt``, by name.

    UNION makes the database deduplicate (a sort or hash it may spill to disk); one query read
    through a server-side cursor (psycopg) or SQLite's lazy cursor, ``batch`` rows at a time.
    """
    result = session.execute(_entities(flt), execution_options={"yield_per": batch})
    try:
        for name, kind in result:
            yield Entity(name, kind)
    finally:
        result.close()  # a reader that stops early releases the cursor
