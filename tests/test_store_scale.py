"""The store at scale: migration 0005's indexes, the batched triplet insert, the store benchmark's smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from devkit.services import port_open
from models import claims, segments, store, triplet_query, triplet_rows
from models.db import get_engine, make_session_factory
from models.migrate import alembic_config, upgrade
from models.tables import Base, TripletRow
from models.triplet import Span, Triplet

ROOT = Path(__file__).resolve().parent.parent
EXTRACTOR = {"model": "tiny-glm", "adapter": "lora-1", "prompt_version": "v1"}
TEXT = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DIRECTOR = Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")
ACTOR = Triplet("娘家的故事第二部", "主演", "林在培", "影视作品", "人物")
NOT_IN_TEXT = Triplet("某剧", "主演", "某人")


def _indexes(url: str, table: str) -> dict[str, list[str]]:
    return {ix["name"]: ix["column_names"] for ix in inspect(get_engine(url)).get_indexes(table)}


def test_migrated_indexes_are_the_tables_indexes(database_url: str) -> None:
    triplets, documents = _indexes(database_url, "triplets_0001"), _indexes(database_url, "documents")
    assert triplets == {"ix_triplets_0001_subject": ["subject", "id"], "ix_triplets_0001_predicate": ["predicate"],
                        # (object, predicate) serves object lookups alone too
                        "ix_triplets_0001_object_predicate": ["object", "predicate"],
                        "ix_triplets_0001_document": ["document_id"]}
    assert {ix.name for ix in segments.segment_table("triplets_0001", "sqlite").indexes} == set(triplets)
    assert documents["ix_documents_external_id"] == ["external_id"]
    declared = {ix.name for ix in Base.metadata.tables["documents"].indexes}
    # PostgreSQL reports the unique constraint's index as well: compare only the plain ones.
    assert {name for name in documents if name.startswith("ix_")} == declared


def test_migration_0005_downgrades_to_the_object_index_and_back(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0004")
    triplets = _indexes(database_url, "triplets")
    assert triplets["ix_triplets_object"] == ["object"]
    assert "ix_triplets_object_predicate" not in triplets
    assert "ix_documents_external_id" not in _indexes(database_url, "documents")
    upgrade(database_url, "0005")
    assert "ix_triplets_object_predicate" in _indexes(database_url, "triplets")
    upgrade(database_url)


def test_migration_0006_downgrades_to_the_subject_index_alone_and_back(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0005")
    assert _indexes(database_url, "triplets")["ix_triplets_subject"] == ["subject"]
    upgrade(database_url, "0006")
    assert _indexes(database_url, "triplets")["ix_triplets_subject"] == ["subject", "id"]
    upgrade(database_url)


def _sorts_a_subjects_page(url: str) -> bool:
    """Whether the plan of ``find_triplets``' page for one subject sorts the subject's rows (instead of
    reading them in id order from an index). Scans of the whole table are ruled out: the table is tiny."""
    statement = triplet_query.matching(triplet_query.TripletFilter(subject="张玲")).limit(100)
    with make_session_factory(url)() as session:
        connection = session.connection()
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))
            return "Sort" in plan
        plan = "\n".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        return "TEMP B-TREE" in plan


def test_a_subjects_page_comes_in_id_order_from_its_index(database_url: str) -> None:
    assert not _sorts_a_subjects_page(database_url)
    command.downgrade(alembic_config(database_url), "0005")
    # before 0006, PostgreSQL sorted every row of the subject for each page; SQLite's index ended in the id
    assert _sorts_a_subjects_page(database_url) == database_url.startswith("postgresql")
    upgrade(database_url)


def _documents(sessions: sessionmaker[Session], *texts: str) -> list[int]:
    with sessions.begin() as session:
        job = store.create_job(session, name="scale")
        return store.add_documents(session, job_id=job.id,
                                   documents=[store.NewDocument(t, f"d{i}") for i, t in enumerate(texts)])


def _stored(sessions: sessionmaker[Session]) -> list[tuple]:
    with sessions() as session:
        rows = session.scalars(select(TripletRow).order_by(TripletRow.id)).all()
    assert all(row.created_at is not None for row in rows)
    return [(r.document_id, r.subject, r.subject_type, r.predicate, r.object, r.object_type, r.subject_start,
             r.subject_end, r.object_start, r.object_end, r.model, r.adapter, r.prompt_version)
            for r in rows]


def test_batched_insert_writes_exactly_the_promised_rows(sessions: sessionmaker[Session]) -> None:
    first, second, failed = _documents(sessions, TEXT, "另一篇" + TEXT, "坏")
    spans = [(Span(0, 2), Span(5, 7)), (None, None)]
    outcomes = [
        store.Outcome(first, TEXT, [DIRECTOR, ACTOR, DIRECTOR, NOT_IN_TEXT]),  # a repeat is stored once
        store.Outcome(second, "另一篇" + TEXT, [DIRECTOR, ACTOR], spans),  # the engine's offsets win
        store.Outcome(failed, "坏", error="unparseable output"),
    ]
    m, a, v = EXTRACTOR.values()
    expected = [
        (first, *DIRECTOR.as_dict().values(), 1, 9, 11, 13, m, a, v),
        (first, *ACTOR.as_dict().values(), 1, 9, 16, 19, m, a, v),
        (first, "某剧", "", "主演", "某人", "", None, None, None, None, m, a, v),
        (second, *DIRECTOR.as_dict().values(), 0, 2, 5, 7, m, a, v),
        (second, *ACTOR.as_dict().values(), None, None, None, None, m, a, v),
    ]
    for _ in range(2):  # delivered twice: the second replaces the first's rows
        with sessions.begin() as session:
            assert store.record_outcomes(session, outcomes, **EXTRACTOR).triplets == 5
        assert _stored(sessions) == expected


def test_batched_insert_leaves_rows_of_documents_no_longer_held(sessions: sessionmaker[Session]) -> None:
    held, lost = _documents(sessions, TEXT, "另一篇" + TEXT)
    with sessions.begin() as session:
        store.record_outcomes(session, [store.Outcome(lost, "另一篇" + TEXT, [ACTOR])], **EXTRACTOR)
    with sessions.begin() as session:
        claims.claim_documents(session, document_ids=[held], owner="w1", lease_seconds=60, max_attempts=3)
    with sessions.begin() as session:
        recorded = store.record_outcomes(session, [store.Outcome(held, TEXT, [DIRECTOR]),
                                                   store.Outcome(lost, "另一篇" + TEXT, [DIRECTOR])],
                                         owner="w1", **EXTRACTOR)
    assert (recorded.triplets, recorded.fenced) == (1, (lost,))
    assert [(row[0], row[3]) for row in _stored(sessions)] == [(lost, "主演"), (held, "导演")]


def test_a_row_the_database_refuses_raises_a_sqlalchemy_error(sessions: sessionmaker[Session]) -> None:
    """The worker stores a refused group one outcome at a time: it catches SQLAlchemy's errors, COPY's too."""
    (doc,) = _documents(sessions, TEXT)
    nul = Triplet("张\x00玲", "导演", "某剧")
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "sqlite":
            assert store.record_outcomes(session, [store.Outcome(doc, TEXT, [nul])], **EXTRACTOR).triplets == 1
            return
    with pytest.raises(DBAPIError, match="0x00"), sessions.begin() as session:
        store.record_outcomes(session, [store.Outcome(doc, TEXT, [nul])], **EXTRACTOR)
    assert _stored(sessions) == []


def test_insert_triplets_of_nothing_touches_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert triplet_rows.insert_triplets(session, []) == 0
        assert triplet_rows.insert_triplets(session, iter(())) == 0
    assert _stored(sessions) == []


def test_store_benchmark_runs_on_both_stores(tmp_path: Path) -> None:
    if not port_open("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store.py"), "--triplets", "4000", "--group", "64", "--lookups", "5",
         "--store", "both", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for kind in ("sqlite", "postgres"):
        rows = json.loads((tmp_path / f"store_{kind}.json").read_text())["rows"]
        values = {row["metric"]: row["value"] for row in rows}
        assert all(row["store"] == kind and row["triplets"] >= 4000 and row["machine"] for row in rows)
        assert values["insert triplets/s (record_outcomes)"] > 0
        assert values["insert triplets/s, last 10 %"] > 0
        for name in ("subject lookup (typical entity)", "predicate+object lookup",
                     "neighbours depth 2 (typical entity)", "distinct page, one subject"):
            assert 0 < values[f"{name} p50 ms"] <= values[f"{name} p95 ms"]
        assert values["store size GB"] >= 0
        assert values["segments"] >= 1
    assert "subject lookup (typical entity) p95 ms" in result.stdout


def test_store_phases_benchmark_splits_the_write_path_into_its_phases(tmp_path: Path) -> None:
    if not port_open("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    out = tmp_path / "phases.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store_phases.py"), "--triplets", "3000", "--group", "64",
         "--store", "both", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["postgres", "sqlite"]
    for phases in results.values():
        store_phases = [phases[name] for name in ("rows (COPY / executemany)", "mark documents done",
                                                  "lock and the rest", "commit")]
        assert phases["triplets"] >= 3000 and all(value > 0 for value in store_phases)
        assert phases["add documents"] > 0 and phases["claim"] > 0
        # the phases are the store's whole time: their sum gives back its rate
        assert phases["insert triplets/s (record_outcomes)"] == pytest.approx(1e6 / sum(store_phases), rel=0.02)
        assert phases["load triplets/s incl. adding and claiming"] < phases["insert triplets/s (record_outcomes)"]
    assert "mark documents done" in result.stdout


def test_store_writers_benchmark_stores_every_writers_groups(tmp_path: Path) -> None:
    out = tmp_path / "writers.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store_writers.py"), "--triplets", "3000", "--group", "64",
         "--writers", "1,2", "--store", "sqlite", "--out", str(out), "--scratch", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    # each writer stores at least its share; the script refuses a run that stored less than it promised
    assert [row["writers"] for row in rows] == [1, 2] and all(row["triplets"] >= 3000 for row in rows)
    assert all(row["insert_triplets_per_s"] > 0 and row["seconds"] > 0 for row in rows)
    assert list(tmp_path.glob("triplets-writers-*")) == []


def test_a_segmented_layout_starts_a_table_every_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import store_layouts

    monkeypatch.setitem(store_layouts.SEGMENT_ROWS, "segments-1m", 2_000)
    row = store_layouts.run("segments-1m", 9_000, tmp_path, seed=0)
    # a segment takes whole groups (~3,000 rows each): a new table once 2,000 rows are in the last one
    assert row["triplets"] >= 9_000 and row["tables"] == 3
    assert list(tmp_path.iterdir()) == []


def test_store_layouts_benchmark_runs_each_variant_on_the_stores_own_table(tmp_path: Path) -> None:
    out = tmp_path / "layouts.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store_layouts.py"), "--triplets", "6000", "--out", str(out),
         "--scratch", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == ["store", "no-text-indexes", "cache-1g", "commit-10",
                                                "checkpoint-1g", "mmap", "sorted", "no-journal", "segments-256k",
                                                "segments-1m"]
    assert all(row["triplets"] >= 6000 and row["rows_per_s"] > 0 and row["tables"] == 1 for row in rows)
    assert all(0 < row["subject_lookup_ms"]["p50"] <= row["subject_lookup_ms"]["p95"] for row in rows)
    assert list(tmp_path.glob("triplets-layouts-*")) == []  # its SQLite files went with it
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "store_layouts.py"), "--variants", "store,btree"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--variants: unknown btree" in bad.stderr


def test_export_memory_benchmark_exports_its_store_in_every_format(tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "export_memory.py"), "--triplets", "2000", "--work", str(tmp_path),
         "--out", str(out)], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {run["format"]: run for run in json.loads(out.read_text())["runs"]}
    assert runs["jsonl"]["summary"] == f"wrote 2000 triplets to {tmp_path / 'jsonl'}"
    assert all(run["peak_rss_mb"] > 0 for run in runs.values()) and len(runs) == 6
