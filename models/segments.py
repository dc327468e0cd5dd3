"""The triplet store's segments: triplets live in tables of bounded size, read through one view.

Every text index of one big table takes a random page per inserted row once the table outgrows
the page cache, and each group's commit writes those pages again: at 10 M triplets SQLite's raw
insert fell to ~20 k rows/s, where tables of 262,144 rows kept it near 80 k (docs/benchmarks.md,
run I). So rows go into the newest segment (``triplets_0001``, ``triplets_0002``, …); once it has
taken ``capacity`` ids, the next writer opens a new one and redefines the view ``triplets`` as
the ``UNION ALL`` of them all. Readers query the view and never name a segment: both databases
push a lookup's conditions into every segment's indexes. Segments are merged, 16 of one size at a
time (``compact``), so that a lookup asks few of them.

Ids are unique across segments: PostgreSQL's segments share one sequence, and SQLite's writer
(the only one at a time) numbers its rows after the newest segment's last id.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Column, ColumnElement, Connection, Index, Integer, MetaData, String, Table, bindparam, func, select, text,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import DateTime

from models.tables import TripletRow, TripletSegment

log = logging.getLogger(__name__)

VIEW = "triplets"
ID_SEQUENCE = "triplet_ids"  # PostgreSQL: every segment's id default
# Ids a segment takes before the next opens. On SQLite each group's commit writes every index page
# its rows touched, which is most pages of a segment's indexes: the write path stored 36.9 k
# triplets/s in segments of 262,144 rows and 49.1 k in segments of 65,536 (600 k triplets, 2-core
# machine). PostgreSQL slows as a segment's indexes outgrow its buffer cache (128 MB by default):
# 2 M triplets in segments of 1,048,576 rows went in at 48.3 k/s (last 10 %: 43.2 k), in segments
# of 262,144 at 53.4 k (54.2 k) (2-core AMD EPYC). Every segment adds to each query's start-up
# (locks, plans), so PostgreSQL's are not smaller still.
DEFAULT_CAPACITY = {"sqlite": 65_536, "postgresql": 262_144}
# Row columns after the id, in the order writers hand them over.
COLUMNS = (
    "document_id", "subject", "subject_type", "predicate", "object", "object_type", "subject_start",
    "subject_end", "object_start", "object_end", "model", "adapter", "prompt_version", "created_at",
)
# More segments than this and the writer that opens the next merges the oldest run first: SQLite
# allows 500 terms in one compound SELECT, and every segment adds to each lookup.
MAX_SEGMENTS = 256
MERGE_FAN_IN = 16
_ROLLOVER_LOCK = 0x7472_6970  # PostgreSQL advisory lock: one writer opens the next segment at a time
# PostgreSQL advisory lock, held alone by a merge and shared by a writer deleting rows (a document stored
# again): a row deleted from a segment after the merge copied it would come back with the copy.
_MERGE_LOCK = 0x7472_6971
_VIEW_LOCK_TIMEOUT = "50ms"
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock timeout
_RETRY_SECONDS = 5.0
_view_busy_until = 0.0
_VIEW_NAME = re.compile(rf"\b{VIEW}\b(?=\.|\s+WHERE|\s*$)")  # the view as a compiled statement names it  # monotonic time before which this process does not try the view again


@dataclass(frozen=True, slots=True)
class Segment:
    number: int
    name: str
    first_id: int
    capacity: int


def segment_name(number: int) -> str:
    return f"triplets_{number:04d}"


def segment_table(name: str, dialect: str) -> Table:
    """The table of one segment, with its indexes. No foreign key and no unique constraint: a
    document's rows are written only by the worker holding its lock, after deleting its old ones
    (``store.record_outcomes``), and each check would cost every insert (PostgreSQL's per-row
    foreign-key trigger: ~11 µs a row, 2-core machine)."""
    metadata = MetaData()
    if dialect == "postgresql":
        # one sequence for all segments, so ids stay unique and ordered across them
        id_column = Column("id", Integer, primary_key=True, server_default=text(f"nextval('{ID_SEQUENCE}')"))
        moment = TIMESTAMP(timezone=True)
    else:
        id_column = Column("id", Integer, primary_key=True, autoincrement=False)
        moment = DateTime(timezone=True)
    table = Table(
        name, metadata, id_column,
        Column("document_id", Integer, nullable=False),
        Column("subject", String(500), nullable=False),
        Column("subject_type", String(100), nullable=False),
        Column("predicate", String(200), nullable=False),
        Column("object", String(500), nullable=False),
        Column("object_type", String(100), nullable=False),
        Column("subject_start", Integer), Column("subject_end", Integer),
        Column("object_start", Integer), Column("object_end", Integer),
        Column("model", String(500), nullable=False),
        Column("adapter", String(500), nullable=False),
        Column("prompt_version", String(50), nullable=False),
        Column("created_at", moment, nullable=False),
    )
    # The same lookups as the single table had (migration 0005/0006): a subject's rows in id order,
    # object and predicate + object, predicate alone, and a document's rows (re-runs, document pages).
    Index(f"ix_{name}_subject", table.c.subject, table.c.id)
    Index(f"ix_{name}_object_predicate", table.c.object, table.c.predicate)
    Index(f"ix_{name}_predicate", table.c.predicate)
    Index(f"ix_{name}_document", table.c.document_id)
    return table


def create_segment(connection: Connection, *, number: int, first_id: int, capacity: int,
                   fill: str | None = None, name: str | None = None) -> Segment:
    """Create segment ``number`` (table, indexes, catalog row); the view is the caller's to redefine.

    ``fill``, a SELECT of ``id`` and ``COLUMNS``, fills the table before its indexes are built
    (sorting once is far cheaper than a random index page per row).
    """
    name = name or segment_name(number)
    table = segment_table(name, connection.dialect.name)
    connection.execute(CreateTable(table))
    if fill is not None:
        connection.exec_driver_sql(f"INSERT INTO {name} (id, {', '.join(COLUMNS)}) {fill}")
    for index in table.indexes:
        connection.execute(CreateIndex(index))
    connection.execute(TripletSegment.__table__.insert().values(
        id=number, name=name, first_id=first_id, capacity=capacity))
    return Segment(number, name, first_id, capacity)


def define_view(connection: Connection, names: Sequence[str], columns: Sequence[str] = COLUMNS) -> None:
    """The view ``triplets`` over these segments (``columns``: a migration's, where they differ)."""
    columns = ", ".join(("id", *columns))
    body = " UNION ALL ".join(f"SELECT {columns} FROM {name}" for name in names)
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"CREATE OR REPLACE VIEW {VIEW} AS {body}")
        return
    connection.exec_driver_sql(f"DROP VIEW IF EXISTS {VIEW}")
    connection.exec_driver_sql(f"CREATE VIEW {VIEW} AS {body}")


def all_segments(session: Session) -> list[Segment]:
    rows = session.execute(select(TripletSegment.id, TripletSegment.name, TripletSegment.first_id,
                                  TripletSegment.capacity).order_by(TripletSegment.id))
    return [Segment(*row) for row in rows]


def newest(session: Session) -> Segment:
    row = session.execute(select(TripletSegment.id, TripletSegment.name, TripletSegment.first_id,
                                 TripletSegment.capacity).order_by(TripletSegment.id.desc()).limit(1)).one()
    return Segment(*row)


def next_id(session: Session, segment: Segment) -> int:
    """The next id a row would take (SQLite: after the newest segment's last row; PostgreSQL: the sequence's)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        last, called = connection.exec_driver_sql(f"SELECT last_value, is_called FROM {ID_SEQUENCE}").one()
        return last + 1 if called else last
    last = connection.exec_driver_sql(f"SELECT max(id) FROM {segment.name}").scalar()
    return segment.first_id if last is None else max(last + 1, segment.first_id)


def writable(session: Session) -> tuple[Segment, int]:
    """The segment new rows go to, and the next id: a full segment is followed by a new one.

    Opening a segment takes the view's lock. On PostgreSQL a long reader (an export) may hold it:
    the writer then waits at most 50 ms, keeps writing into the full segment and tries again 5 s
    later, rather than stalling every writer behind that reader.
    """
    global _view_busy_until
    segment = newest(session)
    first = next_id(session, segment)
    if first - segment.first_id < segment.capacity or time.monotonic() < _view_busy_until:
        return segment, first
    connection = session.connection()
    if connection.dialect.name != "postgresql":  # the writer holds SQLite's only write lock already
        return _open_next(session, segment, first), first
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ROLLOVER_LOCK})")
    segment = newest(session)  # another writer may have opened it while this one waited
    first = next_id(session, segment)
    if first - segment.first_id < segment.capacity:
        return segment, first
    timeout = connection.exec_driver_sql("SHOW lock_timeout").scalar()
    try:
        with session.begin_nested():
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{_VIEW_LOCK_TIMEOUT}'")
            opened = _open_next(session, segment, first)
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        _view_busy_until = time.monotonic() + _RETRY_SECONDS
        log.info("triplet segment %s is full but a reader holds the view: writing on", segment.name)
        opened = segment
    finally:
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{timeout}'")
    return opened, first


def _open_next(session: Session, full: Segment, first_id: int) -> Segment:
    connection = session.connection()
    opened = create_segment(connection, number=full.number + 1, first_id=first_id, capacity=full.capacity)
    log.info("triplet segment %s opened at id %d", opened.name, first_id)
    # Past the bound a writer merges, unless writers deleting rows hold the merge lock: waiting for them
    # could close a cycle (one of them may wait for this writer's rollover lock); a later rollover merges.
    if (len(all_segments(session)) > MAX_SEGMENTS and _excluding_deleters(session, wait=False)
            and (run := _mergeable_run(all_segments(session)))):
        merge_run(session, run)
    define_view(connection, [segment.name for segment in all_segments(session)])
    return opened


def compact(session: Session, *, keep: int) -> int:
    """Merge runs of segments until at most ``keep`` are left or none can merge; how many merges ran.

    The readers' cost grows with the number of segments; each merge rewrites its rows once.
    """
    _excluding_deleters(session, wait=True)
    merges = 0
    while len(current := all_segments(session)) > keep and (run := _mergeable_run(current)):
        merge_run(session, run)
        merges += 1
    if merges:
        define_view(session.connection(), [segment.name for segment in all_segments(session)])
    return merges


def _excluding_deleters(session: Session, *, wait: bool) -> bool:
    """Take the merge lock alone for the transaction (PostgreSQL; SQLite's writer is alone already);
    whether it is held. Writers that delete rows wait for the merge, and the merge for them."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return True
    if wait:
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MERGE_LOCK})")
        return True
    return bool(connection.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({_MERGE_LOCK})").scalar())


def _mergeable_run(segments: Sequence[Segment]) -> list[Segment]:
    """The oldest ``MERGE_FAN_IN`` consecutive segments of one size, the newest two left alone (writers
    may still hold them). Merging equal sizes, as an LSM tree's tiers do, rewrites a row once per
    size: a store of N rows holds about log16(N / capacity) sizes of at most 15 segments each."""
    settled = list(segments[:-2])
    for start in range(len(settled) - MERGE_FAN_IN + 1):
        run = settled[start:start + MERGE_FAN_IN]
        if len({segment.capacity for segment in run}) == 1:
            return run
    return []


def merge_run(session: Session, run: Sequence[Segment]) -> Segment:
    """Replace consecutive segments by one holding their rows; the view is the caller's to redefine,
    and the merge lock the caller's to hold (``_excluding_deleters``)."""
    connection = session.connection()
    first, last = run[0], run[-1]
    names = [segment.name for segment in run]
    fill = " UNION ALL ".join(f"SELECT {', '.join(('id', *COLUMNS))} FROM {name}" for name in names)
    connection.execute(TripletSegment.__table__.delete().where(TripletSegment.id.in_([s.number for s in run])))
    merged = create_segment(connection, number=first.number, first_id=first.first_id,
                            capacity=sum(segment.capacity for segment in run), fill=fill,
                            name=f"triplets_{first.number:04d}_{last.number:04d}")
    connection.exec_driver_sql(f"DROP VIEW IF EXISTS {VIEW}")  # it names the tables dropped next
    for name in names:
        connection.exec_driver_sql(f"DROP TABLE {name}")
    log.info("triplet segments %s to %s merged into %s", first.name, last.name, merged.name)
    return merged


def count_rows(session: Session, where: ColumnElement[bool] | None) -> int:
    """How many rows match ``where`` (conditions on the view ``triplets``).

    PostgreSQL counts through the view, each segment's index answering for it; the statement names
    no segment, so it stays prepared while segments come and go (a subject's count at 10 M
    triplets: p50 3.5 -> 2.2 ms against the union below, 2-core machine; docs/benchmarks.md, run M).
    SQLite counts through a compound view by reading every matching row whole (a popular subject
    at 10 M triplets: thousands of random reads), so it is asked segment by segment. The condition
    is compiled once and its text repeated with each segment's name: built as one SQLAlchemy
    statement, a union of 150 arms took longer to make than to run.
    """
    connection = session.connection()
    statement = select(func.count().label("rows")).select_from(TripletRow.__table__)
    if where is not None:
        statement = statement.where(where)
    if connection.dialect.name == "postgresql":
        return int(session.scalar(statement))
    compiled = statement.compile(dialect=connection.dialect)
    names = [segment.name for segment in all_segments(session)]
    arms = [_VIEW_NAME.sub(name, compiled.string) for name in names]
    sql = f"SELECT coalesce(sum(counted.rows), 0) FROM ({' UNION ALL '.join(arms)}) AS counted"
    parameters = compiled.construct_params()
    # SQLite's "?": every arm's parameters again, in order
    return int(connection.exec_driver_sql(sql, tuple(parameters[key] for key in compiled.positiontup) * len(names))
               .scalar())


def delete_rows(session: Session, document_ids: Sequence[int], *, model: str, adapter: str,
                prompt_version: str) -> None:
    """Delete these documents' rows of one extractor from every segment (only documents stored
    before come here: a re-run, a second delivery)."""
    if not document_ids:
        return
    if session.get_bind().dialect.name == "postgresql":  # no merge copies a segment while rows leave it
        session.connection().exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({_MERGE_LOCK})")
    for segment in all_segments(session):
        session.execute(
            text(f"DELETE FROM {segment.name} WHERE document_id IN :ids AND model = :model AND adapter = :adapter"
                 " AND prompt_version = :prompt_version").bindparams(bindparam("ids", expanding=True)),
            {"ids": list(document_ids), "model": model, "adapter": adapter, "prompt_version": prompt_version})
