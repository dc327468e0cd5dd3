"""triplet rows carry no fingerprint: nothing read it, and making it cost the writer

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import sqlite3

import sqlalchemy as sa
from alembic import op

from models.errors import ConfigError
from models.segments import COLUMNS, VIEW, define_view

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The columns the view had at 0007: the fingerprint before created_at, as COLUMNS then listed them.
_COLUMNS_0007 = (*COLUMNS[:-1], "fingerprint", COLUMNS[-1])
# The fingerprint 0007's writers made: SHA-256 of the five fields and the extractor, joined by U+001F.
_FIELDS = ("subject", "subject_type", "predicate", "object", "object_type", "model", "adapter", "prompt_version")
_SQLITE_DROP_COLUMN = (3, 35, 0)


def upgrade() -> None:
    # The writer hashed every triplet for a column no reader used: SQLite's write path spent 12.1-14.6 µs
    # a triplet outside its INSERT with it, 9.5-9.8 without (1 M triplets, 2-core machine;
    # docs/benchmarks.md, run N).
    connection = op.get_bind()
    names = _segment_names(connection)
    holding = [name for name in names if _has_fingerprint(connection, name)]
    if not holding:
        return  # 0007 ran with this code: its segments never had the column
    if connection.dialect.name == "sqlite" and sqlite3.sqlite_version_info < _SQLITE_DROP_COLUMN:
        raise ConfigError(f"SQLite {sqlite3.sqlite_version} cannot drop a column: migration 0008 needs SQLite 3.35 or"
                          " newer (this Python's sqlite3 module)")
    op.execute(f"DROP VIEW {VIEW}")  # it names the column
    for name in holding:
        op.execute(f"ALTER TABLE {name} DROP COLUMN fingerprint")
    define_view(connection, names)


def downgrade() -> None:
    connection = op.get_bind()
    names = _segment_names(connection)
    op.execute(f"DROP VIEW {VIEW}")
    joined = ", ".join(_FIELDS)
    for name in names:
        if connection.dialect.name == "postgresql":
            op.execute(f"ALTER TABLE {name} ADD COLUMN fingerprint VARCHAR(64)")
            op.execute(f"UPDATE {name} SET fingerprint = encode(sha256(convert_to(concat_ws(chr(31), {joined}),"
                       " 'UTF8')), 'hex')")
            op.execute(f"ALTER TABLE {name} ALTER COLUMN fingerprint SET NOT NULL")
        else:
            connection.connection.driver_connection.create_function(
                "triplet_fingerprint", len(_FIELDS), _fingerprint, deterministic=True)
            op.execute(f"ALTER TABLE {name} ADD COLUMN fingerprint VARCHAR(64) NOT NULL DEFAULT ''")
            op.execute(f"UPDATE {name} SET fingerprint = triplet_fingerprint({joined})")
    define_view(connection, names, _COLUMNS_0007)


def _fingerprint(*fields: str) -> str:
    return hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()


def _segment_names(connection) -> list[str]:  # type: ignore[no-untyped-def]
    return [row[0] for row in connection.exec_driver_sql("SELECT name FROM triplet_segments ORDER BY id")]


def _has_fingerprint(connection, name: str) -> bool:  # type: ignore[no-untyped-def]
    return "fingerprint" in {column["name"] for column in sa.inspect(connection).get_columns(name)}
