"""Where the store's insert rate goes: SQLite's raw insert of triplet rows under layout variants, side by side.

``bench/store.py`` times the whole write path (``record_outcomes``). This one isolates what the
database does with the rows: the same synthetic groups (``bench.store.Corpus``, rows built by
``models.triplet_rows.document_rows``, ~3,000 rows a group of 1,024 documents) go into a fresh
SQLite file per variant through one ``executemany`` and one commit per group, as a worker's
store call does, and only those two calls are timed. The table is a segment's
(``models.segments.segment_table``, its indexes), changed as each variant says:

- ``store``: as the store is (models/db.py's pragmas: WAL, 64 MiB cache, 64 Ki-page checkpoints);
- ``no-text-indexes``: without the subject and (object, predicate) indexes;
- ``cache-1g``: a 1 GiB page cache instead of 64 MiB;
- ``commit-10``: one commit per 10 groups;
- ``checkpoint-1g``: WAL checkpoints every 256 Ki pages (1 GiB) instead of 64 Ki;
- ``mmap``: the file read through a 4 GiB memory map;
- ``sorted``: each group's rows in subject order;
- ``no-journal``: no journal and no syncs at all. Unsafe (a crash can corrupt the file), so
  never a store setting: it bounds what any journal or sync setting could give;
- ``segments-256k``, ``segments-1m``: the rows in a new table (with the store's indexes) every
  262,144 or 1,048,576 rows, the layout a segmented (LSM-like) store would write; its readers
  must ask every segment.

After the load, each variant times 200 subject lookups (a uniformly drawn entity, its first page
of 100 rows in id order, as ``query --subject`` asks; through ``UNION ALL`` over the segments).

    python bench/store_layouts.py --triplets 3000000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.dialects import sqlite as sqlite_dialect  # noqa: E402
from sqlalchemy.schema import CreateIndex, CreateTable  # noqa: E402

from bench.store import EXTRACTOR, Corpus, entity, machine  # noqa: E402
from models import db  # noqa: E402
from models.segments import COLUMNS, segment_table  # noqa: E402
from models.triplet_rows import document_rows  # noqa: E402

VARIANTS = ("store", "no-text-indexes", "cache-1g", "commit-10", "checkpoint-1g", "mmap", "sorted",
            "no-journal", "segments-256k", "segments-1m")
SEGMENT_ROWS = {"segments-256k": 262_144, "segments-1m": 1_048_576}
LOOKUPS = 200
TEXT_INDEXES = ("ix_triplets_subject", "ix_triplets_object_predicate")


def schema(variant: str) -> list[str]:
    """The store's CREATE statements for one table of triplets, named ``triplets``."""
    dialect = sqlite_dialect.dialect()
    layout = segment_table("triplets", "sqlite")
    indexes = [str(CreateIndex(index).compile(dialect=dialect)) for index in layout.indexes
               if not (variant == "no-text-indexes" and index.name in TEXT_INDEXES)]
    return [str(CreateTable(layout).compile(dialect=dialect)), *indexes]


def segment_schema(variant: str, segment: int) -> list[str]:
    """``schema(variant)`` for the table of segment ``segment``, its indexes renamed with it."""
    return [re.sub(r"\b(triplets|ix_triplets_\w+)\b", rf"\1_{segment}", statement) for statement in schema(variant)]


def lookup_ms(connection: sqlite3.Connection, tables: list[str], subjects: list[str]) -> dict[str, float]:
    """p50 and p95 of one subject's first page over ``tables``."""
    branches = " UNION ALL ".join(f"SELECT * FROM (SELECT id, subject, predicate, object FROM {table} "
                                  "WHERE subject = ? ORDER BY id LIMIT 100)" for table in tables)
    query = f"SELECT * FROM ({branches}) ORDER BY id LIMIT 100"
    times = []
    for subject in subjects:
        started = time.perf_counter()
        connection.execute(query, [subject] * len(tables)).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50": round(times[len(times) // 2], 3), "p95": round(times[int(len(times) * 0.95)], 3)}


def connect(path: Path, variant: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    db._tune_sqlite(connection, None)  # the store's own pragmas
    if variant == "cache-1g":
        connection.execute("PRAGMA cache_size=-1048576")
    elif variant == "checkpoint-1g":
        connection.execute(f"PRAGMA wal_autocheckpoint={4 * db.SQLITE_AUTOCHECKPOINT_PAGES}")
        connection.execute(f"PRAGMA journal_size_limit={4 * db.SQLITE_AUTOCHECKPOINT_PAGES * 4096}")
    elif variant == "mmap":
        connection.execute(f"PRAGMA mmap_size={4 * 2**30}")
    elif variant == "no-journal":
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
    return connection


def rows_of(corpus: Corpus, first_document: int, variant: str) -> list[tuple]:
    rows = []
    for offset, (text, _, found) in enumerate(corpus.group(1024)):
        rows += document_rows(first_document + offset, text, found, None, created_at="2026-11-30 12:00:00+00:00",
                              **EXTRACTOR)
    if variant == "sorted":
        rows.sort(key=lambda row: row[1])
    return rows


def run(variant: str, triplets: int, folder: Path, seed: int) -> dict[str, object]:
    path = folder / f"{variant}.db"
    connection = connect(path, variant)
    segment_rows = SEGMENT_ROWS.get(variant)
    tables = ["triplets_0" if segment_rows else "triplets"]
    for statement in segment_schema(variant, 0) if segment_rows else schema(variant):
        connection.execute(statement)
    corpus = Corpus(max(triplets // 10, 100), seed)
    every = 10 if variant == "commit-10" else 1
    stored, groups, seconds, per_million, mark, in_segment = 0, 0, 0.0, [], (0, 0.0), 0
    while stored < triplets:
        rows = rows_of(corpus, groups * 1024, variant)
        started = time.perf_counter()
        if groups % every == 0:
            connection.execute("BEGIN IMMEDIATE")
        if segment_rows and in_segment >= segment_rows:  # a new segment, in the group's own transaction
            for statement in segment_schema(variant, len(tables)):
                connection.execute(statement)
            tables.append(f"triplets_{len(tables)}")
            in_segment = 0
        connection.executemany(f"INSERT INTO {tables[-1]} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                               rows)
        groups += 1
        if groups % every == 0 or stored + len(rows) >= triplets:
            connection.execute("COMMIT")
        seconds += time.perf_counter() - started
        stored += len(rows)
        in_segment += len(rows)
        if stored - mark[0] >= 1_000_000 or stored >= triplets:
            per_million.append(round((stored - mark[0]) / (seconds - mark[1])))
            mark = (stored, seconds)
    draw = random.Random(seed)
    lookups = lookup_ms(connection, tables, [entity(draw.randrange(corpus.entities)) for _ in range(LOOKUPS)])
    connection.close()
    size = sum(p.stat().st_size for p in folder.glob(f"{variant}.db*")) / 1e9
    for leftover in folder.glob(f"{variant}.db*"):
        leftover.unlink()
    return {"variant": variant, "triplets": stored, "rows_per_s": round(stored / seconds),
            "rows_per_s_per_million": per_million, "size_gb": round(size, 2), "tables": len(tables),
            "subject_lookup_ms": lookups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=3_000_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "store_layouts.json")
    parser.add_argument("--scratch", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))} (expected some of {', '.join(VARIANTS)})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="triplets-layouts-", dir=args.scratch) as folder:
        for variant in variants:  # one after the other: they share this machine's cores
            rows.append(run(variant, args.triplets, Path(folder), args.seed))
            print(f"  {variant:<18} {rows[-1]['rows_per_s']:>9,} rows/s  per million: "
                  f"{rows[-1]['rows_per_s_per_million']}  subject lookup ms: {rows[-1]['subject_lookup_ms']}",
                  flush=True)
    base = rows[0]["rows_per_s"]
    print(f"\n{'variant':<18}{'rows/s':>10}{'last million':>14}{'x first':>9}{'GB':>7}{'tables':>8}"
          f"{'lookup p95 ms':>15}")
    for row in rows:
        print(f"{row['variant']:<18}{row['rows_per_s']:>10,}{row['rows_per_s_per_million'][-1]:>14,}"
              f"{row['rows_per_s'] / base:>9.2f}{row['size_gb']:>7.2f}{row['tables']:>8}"
              f"{row['subject_lookup_ms']['p95']:>15}")
    print(f"({args.triplets:,} triplets each; {machine()})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
