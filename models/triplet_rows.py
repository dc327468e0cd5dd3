"""Triplet rows for the store, and the fast way into its newest segment: COPY on PostgreSQL, one
executemany on SQLite.

A worker writes a few thousand rows per group; through the ORM's bulk insert each row is a dict
that SQLAlchemy re-inspects, defaults and binds one by one (on PostgreSQL as multi-row INSERTs it
renders and psycopg parses). Rows here are plain tuples in ``COLUMNS`` order, handed to the driver
as they are; ``bench/store.py`` times the result.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models import segments
from models.segments import COLUMNS
from models.triplet import Span, Triplet

_NAMES = ", ".join(COLUMNS)
# PostgreSQL's binary COPY: each value in the wire format of its column's type (varchar takes text's).
# Sent as text, COPY took 17-21 µs a row to format and parse, where binary took 5 (300 k rows into an
# unindexed table, 2-core machine): the formatting was most of the write path's COPY.
_BINARY_TYPES = ("int4", "text", "text", "text", "text", "text", "int4", "int4", "int4", "int4", "text", "text",
                 "text", "timestamptz")


def document_rows(document_id: int, text: str, triplets: Sequence[Triplet],
                  spans: Sequence[tuple[Span | None, Span | None]] | None, *, model: str, adapter: str,
                  prompt_version: str, created_at: datetime | str) -> list[tuple]:
    """One document's rows, a triplet repeated in the answer (the same five fields) kept once.

    One loop with nothing called per triplet but ``str.find``: it runs for every stored triplet, and
    the calls it replaced were a fifth of the write path's time (2-core machine, profiled). Rows carry
    no hash of their fields (migration 0008): nothing read it, and making it cost SQLite's writer
    2.5-5 µs a triplet.
    """
    rows = []
    seen: set[tuple[str, str, str, str, str]] = set()
    for index, triplet in enumerate(triplets):
        subject, obj = triplet.subject, triplet.object
        key = (subject, triplet.subject_type, triplet.predicate, obj, triplet.object_type)
        if key in seen:
            continue
        seen.add(key)
        if spans is not None:
            subject_span, object_span = spans[index]
            subject_start = subject_end = object_start = object_end = None
            if subject_span is not None:
                subject_start, subject_end = subject_span.start, subject_span.end
            if object_span is not None:
                object_start, object_end = object_span.start, object_span.end
        else:  # the first occurrence in the text, as ``locate`` finds it
            subject_start = text.find(subject) if subject else -1
            object_start = text.find(obj) if obj else -1
            subject_end = subject_start + len(subject) if subject_start >= 0 else None
            object_end = object_start + len(obj) if object_start >= 0 else None
            subject_start = subject_start if subject_start >= 0 else None
            object_start = object_start if object_start >= 0 else None
        rows.append((document_id, subject, triplet.subject_type, triplet.predicate, obj, triplet.object_type,
                     subject_start, subject_end, object_start, object_end, model, adapter, prompt_version, created_at))
    return rows


def timestamp(session: Session, moment: datetime) -> datetime | str:
    """``moment`` as the rows carry it. SQLite's driver formats a datetime per row (its default
    adapter, ``isoformat(" ")``: 6 % of a group's store time); its rows get that string, made once."""
    return moment if session.get_bind().dialect.name == "postgresql" else moment.isoformat(" ")


def insert_triplets(session: Session, rows: Iterable[tuple]) -> int:
    """Insert rows (``COLUMNS`` order) in the session's transaction; returns how many.

    On PostgreSQL ``rows`` may be made as they are read: COPY sends them in chunks, which the server
    stores while the next chunk is made. The caller removes rows they would collide with first:
    neither path skips conflicts.
    """
    rows = iter(rows)
    if (first := next(rows, None)) is None:
        return 0
    rows = itertools.chain((first,), rows)
    segment, first_id = segments.writable(session)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        # One executemany of one prepared statement: sqlite3 loops over the tuples in C. This writer
        # holds the only write lock, so the ids after the segment's last are its own.
        statement = f"INSERT INTO {segment.name} (id, {_NAMES}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
        numbered = [(first_id + index, *row) for index, row in enumerate(rows)]
        connection.exec_driver_sql(statement, numbered)
        return len(numbered)
    import psycopg  # only a PostgreSQL store needs its driver

    # ids from the segments' shared sequence
    copy_rows = f"COPY {segment.name} ({_NAMES}) FROM STDIN (FORMAT BINARY)"
    driver = connection.connection.driver_connection
    written = 0
    try:
        with driver.cursor() as cursor, cursor.copy(copy_rows) as copy:
            copy.set_types(_BINARY_TYPES)
            for written, row in enumerate(rows, 1):
                copy.write_row(row)
    except psycopg.Error as exc:
        # Callers (the worker's store-one-by-one fallback) catch SQLAlchemy's errors, as for any statement.
        raise DBAPIError.instance(copy_rows, None, exc, psycopg.Error) from exc
    return written
