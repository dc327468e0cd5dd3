"""Triplet rows for the store, and the fast way in: COPY on PostgreSQL, one executemany on SQLite.

A worker writes a few thousand rows per group; through the ORM's bulk insert each row is a dict
that SQLAlchemy re-inspects, defaults and binds one by one (on PostgreSQL as multi-row INSERTs it
renders and psycopg parses). Rows here are plain tuples in ``COLUMNS`` order, handed to the driver
as they are; ``bench/store.py`` times the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Integer, any_, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models.triplet import Span, Triplet, locate

COLUMNS = (
    "document_id", "subject", "subject_type", "predicate", "object", "object_type", "subject_start",
    "subject_end", "object_start", "object_end", "model", "adapter", "prompt_version", "fingerprint", "created_at",
)
_COPY = f"COPY triplets ({', '.join(COLUMNS)}) FROM STDIN"
_INSERT = f"INSERT INTO triplets ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def fingerprint(triplet: Triplet, model: str, adapter: str, prompt_version: str) -> str:
    parts = (*triplet.key, model, adapter, prompt_version)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def document_rows(document_id: int, text: str, triplets: Sequence[Triplet],
                  spans: Sequence[tuple[Span | None, Span | None]] | None, *, model: str, adapter: str,
                  prompt_version: str, created_at: datetime | str) -> list[tuple]:
    """One document's rows, a triplet repeated in the answer kept once (the fingerprint is the key)."""
    rows = []
    seen: set[str] = set()
    for index, triplet in enumerate(triplets):
        key = fingerprint(triplet, model, adapter, prompt_version)
        if key in seen:
            continue
        seen.add(key)
        if spans is not None:
            subject_span, object_span = spans[index]
        else:
            subject_span, object_span = locate(text, triplet.subject), locate(text, triplet.object)
        rows.append((
            document_id, triplet.subject, triplet.subject_type, triplet.predicate, triplet.object, triplet.object_type,
            subject_span.start if subject_span else None, subject_span.end if subject_span else None,
            object_span.start if object_span else None, object_span.end if object_span else None,
            model, adapter, prompt_version, key, created_at,
        ))
    return rows


def timestamp(session: Session, moment: datetime) -> datetime | str:
    """``moment`` as the rows carry it. SQLite's driver formats a datetime per row (its default
    adapter, ``isoformat(" ")``: 6 % of a group's store time); its rows get that string, made once."""
    return moment if session.get_bind().dialect.name == "postgresql" else moment.isoformat(" ")


def one_of(session: Session, column: ColumnElement[int], ids: Sequence[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one parameter instead of a group's 1,024.

    psycopg re-parses a statement too long for its cache on every call: 15 ms for a 1,024-id ``IN``
    on this project's 2-core machine, twice per stored group (the lock, the delete).
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(Integer)))
    return column.in_(ids)


def insert_triplets(session: Session, rows: Sequence[tuple]) -> int:
    """Insert rows (``COLUMNS`` order) in the session's transaction; returns how many.

    The caller removes rows they would collide with first: neither path skips conflicts.
    """
    if not rows:
        return 0
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        # One executemany of one prepared statement: sqlite3 loops over the tuples in C.
        connection.exec_driver_sql(_INSERT, list(rows))
        return len(rows)
    import psycopg  # only a PostgreSQL store needs its driver

    driver = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # Callers (the worker's store-one-by-one fallback) catch SQLAlchemy's errors, as for any statement.
        raise DBAPIError.instance(_COPY, None, exc, psycopg.Error) from exc
    return len(rows)
