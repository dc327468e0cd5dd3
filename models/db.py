"""Engines and sessions for SQLite and Postgres, tuned for many concurrent writers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import ColumnElement, Engine, Integer, any_, bindparam, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_AUTOCHECKPOINT_PAGES = 65_536
SQLITE_CACHE_KIB = 65_536


def _tune_sqlite(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets readers (status, query) run while a worker writes; the busy timeout makes
    # concurrent writers queue instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # A worker's group of ~3,000 triplets lands on a random page of each text index per row, so
    # each commit writes thousands of pages to the WAL. At the default 1,000-page autocheckpoint
    # every commit also checkpoints (an fsync of WAL and database); at 64 Ki pages (256 MiB) the
    # checkpoint comes every few dozen groups and writes each page once however often the groups
    # between rewrote it (raw inserts with the store's indexes, 1 M rows: 23.6 k -> 45.1 k rows/s;
    # docs/benchmarks.md "Store at scale"). It is a per-connection setting: any writer that commits
    # past the mark checkpoints, as before; the WAL file is cut back to journal_size_limit after.
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_AUTOCHECKPOINT_PAGES * 4096}")
    # The default 2 MiB page cache re-reads the indexes' inner pages through the OS on every insert
    # and lookup once the store passes ~1 M triplets. The cache is per connection and filled lazily:
    # a connection that only claims documents never takes the 64 MiB. (In WAL mode another
    # writer's commit empties it, so concurrent writers lose nothing but the gain.)
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _begin_immediate(conn) -> None:  # type: ignore[no-untyped-def]
    # pysqlite's deferred BEGIN upgrades to a write lock mid-transaction, which deadlocks
    # two writers; taking the lock up front makes them wait on the busy timeout instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL and process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _tune_sqlite)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None

        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def read_sessions(url: str) -> sessionmaker[Session]:
    """Sessions for reading only: an export's long scan, the web view's polls.

    The store's own SQLite sessions start with BEGIN IMMEDIATE (a writer lock, so two writers queue
    instead of deadlocking): a long read in one of those would stall every worker's writes until it
    ended. Here pysqlite's default applies: a SELECT opens no transaction, and in WAL mode a reader
    never blocks a writer. PostgreSQL readers never block writers anyway.

    A reader that runs the same queries again and again (the web view, the metrics) opens its
    sessions with ``sessions.begin()``, which ends a read by committing. psycopg prepares a statement
    run 5 times on a connection, and forgets every prepared statement of the connection whenever it
    rolls back, as a session's plain close does: PostgreSQL then plans each lookup's union over the
    store's segments afresh (a subject lookup at 10 M triplets, 38 segments: p50 16.5 -> 8.8 ms,
    2-core machine; docs/benchmarks.md, run M).
    """
    if not url.startswith("sqlite"):
        return make_session_factory(url)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    return sessionmaker(engine, expire_on_commit=False)


def one_of(session: Session, column: ColumnElement[int], ids: Sequence[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one parameter instead of a group's 1,024.

    psycopg re-parses a statement too long for its cache on every call: 15 ms for a 1,024-id ``IN``
    on this project's 2-core machine, for each statement of a group's claim and store.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(Integer)))
    return column.in_(ids)
