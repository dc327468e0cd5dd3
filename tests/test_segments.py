"""The segmented triplet store (models/segments.py) against real SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from alembic import command
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from models import segments, store
from models.db import get_engine, make_session_factory
from models.migrate import alembic_config, upgrade
from models.tables import Document, Status, TripletRow, TripletSegment
from models.triplet import Triplet
from models.triplet_query import TripletFilter, find_triplets, matching
from tests.workers import triplets, worker_env

EXTRACTOR = {"model": "tiny-glm", "adapter": "", "prompt_version": "v1"}


def _capacity(sessions: sessionmaker[Session], ids: int) -> None:
    with sessions.begin() as session:
        session.execute(TripletSegment.__table__.update().values(capacity=ids))


def _documents(sessions: sessionmaker[Session], count: int) -> list[int]:
    with sessions.begin() as session:
        job = store.create_job(session, name="segments")
        return store.add_documents(session, job_id=job.id,
                                   documents=[store.NewDocument(f"文本{i}", f"d{i}") for i in range(count)])


def _record(sessions: sessionmaker[Session], document_id: int, *triplets: Triplet) -> None:
    with sessions.begin() as session:
        store.record_outcomes(session, [store.Outcome(document_id, "文本", triplets)], **EXTRACTOR)


def _segment_names(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return [segment.name for segment in segments.all_segments(session)]


def _rows_by_segment(sessions: sessionmaker[Session]) -> dict[str, list[tuple[int, int, str]]]:
    names = _segment_names(sessions)
    with sessions() as session:
        connection = session.connection()
        return {name: [tuple(row) for row in connection.exec_driver_sql(
                    f"SELECT id, document_id, object FROM {name} ORDER BY id")] for name in names}


def test_a_full_segment_is_followed_by_a_new_one_and_the_view_reads_them_all(
        sessions: sessionmaker[Session]) -> None:
    _capacity(sessions, 4)
    documents = _documents(sessions, 5)
    for number, document in enumerate(documents):
        _record(sessions, document, *(Triplet("张玲", "作品", f"剧{number}-{k}") for k in range(3)))
    by_segment = _rows_by_segment(sessions)
    # a segment takes whole groups: a new one once 4 ids are taken, so 3 + 3 rows, then 3 + 3, then 3
    assert [len(rows) for rows in by_segment.values()] == [6, 6, 3]
    stored = [row for rows in by_segment.values() for row in rows]
    assert [row[0] for row in stored] == sorted({row[0] for row in stored})  # unique ids, rising across segments
    with sessions() as session:
        page = find_triplets(session, TripletFilter(subject="张玲"), limit=4, offset=5)
        every = session.execute(matching(TripletFilter())).scalars().all()
    assert page.total == 15
    with sessions() as session:  # counted segment by segment, whatever the filter
        job = session.scalar(select(Document.job_id).where(Document.id == documents[0]))
        assert find_triplets(session, TripletFilter(job_id=job), limit=0).total == 15
        assert find_triplets(session, TripletFilter(object="剧2-", contains=True), limit=0).total == 3
        assert find_triplets(session, TripletFilter(job_id=job + 1), limit=0).total == 0
    assert [record.object for record in page.items] == ["剧1-2", "剧2-0", "剧2-1", "剧2-2"]
    assert [row.id for row in every] == [row[0] for row in stored]


def test_storing_a_document_again_replaces_its_rows_in_an_older_segment(sessions: sessionmaker[Session]) -> None:
    _capacity(sessions, 2)
    first, *others = _documents(sessions, 3)
    _record(sessions, first, Triplet("张玲", "作品", "旧剧"), Triplet("张玲", "国籍", "中国"))
    for document in others:
        _record(sessions, document, Triplet("林在培", "作品", "某剧"))
    _record(sessions, first, Triplet("张玲", "作品", "新剧"))
    by_segment = _rows_by_segment(sessions)
    assert len(by_segment) == 3
    assert [row[2] for row in by_segment[segments.segment_name(1)]] == []  # the old rows went
    assert [(row[1], row[2]) for row in by_segment[segments.segment_name(3)]] == [(first, "新剧")]
    with sessions() as session:
        assert [(r.document_id, r.object) for r in session.scalars(matching(TripletFilter()))] == [
            (others[0], "某剧"), (others[1], "某剧"), (first, "新剧")]


def test_only_a_document_stored_before_has_its_old_rows_searched(sessions: sessionmaker[Session]) -> None:
    done, failed = _documents(sessions, 2)
    deletes: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        _record(sessions, done, Triplet("张玲", "作品", "某剧"))
        with sessions.begin() as session:
            store.record_outcomes(session, [store.Outcome(failed, "文本", error="unparseable output")], **EXTRACTOR)
        assert deletes == []  # first runs: nothing to replace, no segment searched
        _record(sessions, done, Triplet("张玲", "作品", "某剧"))
        assert len(deletes) == 1 and segments.segment_name(1) in deletes[0]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with sessions() as session:
        flags = dict(session.execute(select(Document.id, Document.has_triplets)).all())
        assert session.scalar(select(func.count()).select_from(TripletRow)) == 1
    assert flags == {done: True, failed: False}


def test_migration_0007_moves_the_rows_into_the_first_segment_and_back(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "0006")
    sessions = make_session_factory(database_url)
    with sessions.begin() as session:  # as revision 0006's code wrote them
        run = session.connection().exec_driver_sql
        run("INSERT INTO jobs (id, name, created_at) VALUES (1, 'old', '2026-11-30 00:00:00')")
        run("INSERT INTO documents (id, job_id, external_id, sha256, text, status, attempts, crashes_alone, created_at)"
            " VALUES (1, 1, 'a', 'a', '旧文本', 'done', 1, 0, '2026-11-30 00:00:00'),"
            " (2, 1, 'b', 'b', '空', 'pending', 0, 0, '2026-11-30 00:00:00')")
        run("INSERT INTO triplets (document_id, subject, subject_type, predicate, object, object_type, model, adapter,"
            " prompt_version, fingerprint, created_at) VALUES (1, '张玲', '', '作品', '旧剧', '', 'tiny-glm', '',"
            " 'v1', 'f', '2026-11-30 00:00:00')")
    stored, empty = 1, 2
    upgrade(database_url)
    with sessions() as session:
        (old,) = session.execute(select(TripletRow.id, TripletRow.object)).all()
        flags = dict(session.execute(select(Document.id, Document.has_triplets)).all())
    assert old.object == "旧剧" and flags == {stored: True, empty: False}
    _record(sessions, empty, Triplet("林在培", "作品", "新剧"))
    with sessions() as session:
        rows = session.execute(select(TripletRow.id, TripletRow.object).order_by(TripletRow.id)).all()
    assert [row.object for row in rows] == ["旧剧", "新剧"] and rows[1].id > rows[0].id
    command.downgrade(alembic_config(database_url), "0006")
    with get_engine(database_url).connect() as connection:
        assert sorted(connection.exec_driver_sql("SELECT object FROM triplets").scalars()) == ["新剧", "旧剧"]
    upgrade(database_url)


def _fingerprints(database_url: str) -> dict[str, list[str]]:
    with get_engine(database_url).connect() as connection:
        names = connection.exec_driver_sql("SELECT name FROM triplet_segments ORDER BY id").scalars().all()
        return {name: list(connection.exec_driver_sql(f"SELECT fingerprint FROM {name} ORDER BY id").scalars())
                for name in [*names, "triplets"]}


def test_migration_0008_drops_the_fingerprints_and_gives_back_the_ones_0007s_writers_made(
        sessions: sessionmaker[Session], database_url: str) -> None:
    _capacity(sessions, 1)
    first, second = _documents(sessions, 2)
    _record(sessions, first, Triplet("张玲", "导演", "某剧", "人物", "影视作品"))
    _record(sessions, second, Triplet("林在培", "主演", "某剧"))
    command.downgrade(alembic_config(database_url), "0007")
    # what 0007's writer stored: SHA-256 of the five fields and the extractor, joined by U+001F
    expected = [hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest() for fields in (
        ("张玲", "人物", "导演", "某剧", "影视作品", "tiny-glm", "", "v1"), ("林在培", "", "主演", "某剧", "", "tiny-glm", "", "v1"))]
    assert _fingerprints(database_url) == {"triplets_0001": expected[:1], "triplets_0002": expected[1:],
                                           "triplets": expected}
    upgrade(database_url)
    with pytest.raises(DBAPIError, match="fingerprint"):
        _fingerprints(database_url)
    third = _documents(sessions, 1)[0]
    _record(sessions, third, Triplet("何赛飞", "主演", "某剧"))
    with sessions() as session:
        subjects = session.scalars(select(TripletRow.subject).order_by(TripletRow.id)).all()
    assert subjects == ["张玲", "林在培", "何赛飞"]


def test_a_subject_lookup_searches_every_segments_index(sessions: sessionmaker[Session]) -> None:
    _capacity(sessions, 1)
    for document in _documents(sessions, 3):
        _record(sessions, document, Triplet("张玲", "作品", "某剧"))
    statement = matching(TripletFilter(subject="张玲")).limit(100)
    names = _segment_names(sessions)
    with sessions() as session:
        connection = session.connection()
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))
            scans = [name for name in names if f"Index Scan using ix_{name}_subject" in plan]
        else:
            plan = "\n".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            scans = [name for name in names if f"USING INDEX ix_{name}_subject" in plan]
    assert scans == names and len(scans) == 3, plan


def test_a_writer_does_not_wait_for_a_reader_holding_the_view(database_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a full segment is followed only once no reader holds the view; until then writes go on."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite readers never hold a lock a writer waits for (WAL)")
    monkeypatch.setattr(segments, "_view_busy_until", 0.0)
    sessions = make_session_factory(database_url)
    _capacity(sessions, 1)
    first, second, third = _documents(sessions, 3)
    _record(sessions, first, Triplet("张玲", "作品", "某剧"))
    reader = sessions()
    reader.execute(select(func.count()).select_from(TripletRow)).scalar()  # its transaction holds the view
    writer = threading.Thread(target=_record, args=(sessions, second, Triplet("林在培", "作品", "某剧")))
    started = time.monotonic()
    writer.start()
    writer.join(timeout=30)
    assert not writer.is_alive() and time.monotonic() - started < 5
    reader.close()
    assert [len(rows) for rows in _rows_by_segment(sessions).values()] == [2]  # written on, into the full one
    monkeypatch.setattr(segments, "_view_busy_until", 0.0)  # the retry is due
    _record(sessions, third, Triplet("何赛飞", "作品", "某剧"))
    assert [len(rows) for rows in _rows_by_segment(sessions).values()] == [2, 1]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TripletRow)) == 3
        assert session.scalar(select(func.count()).where(Document.status == Status.done)) == 3


def _one_row_segments(sessions: sessionmaker[Session], count: int) -> list[int]:
    """``count`` documents stored one row each, a segment each (capacity 1); their ids."""
    _capacity(sessions, 1)
    documents = _documents(sessions, count)
    for number, document in enumerate(documents):
        _record(sessions, document, Triplet("张玲", "作品", f"剧{number}"))
    return documents


def test_compaction_merges_the_oldest_sixteen_and_keeps_every_row(database_url: str, tmp_path) -> None:
    sessions = make_session_factory(database_url)
    documents = _one_row_segments(sessions, 20)
    assert len(_segment_names(sessions)) == 20
    result = triplets(worker_env(database_url=database_url), "db", "compact", "--keep", "3", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "1 merges: 20 segments -> 5\n"), result.stderr
    # sixteen merged into one, the four newest left alone: no run of sixteen is left to merge
    assert _segment_names(sessions) == ["triplets_0001_0016", *(segments.segment_name(n) for n in range(17, 21))]
    with sessions() as session:
        page = find_triplets(session, TripletFilter(subject="张玲"), limit=None)
    assert [record.object for record in page.items] == [f"剧{n}" for n in range(20)]
    _record(sessions, documents[3], Triplet("张玲", "作品", "新剧"))  # its old row is in the merged segment
    with sessions() as session:
        objects = [r.object for r in session.scalars(matching(TripletFilter(document_id=documents[3])))]
    assert objects == ["新剧"]


def test_a_writer_merges_segments_past_the_bound(sessions: sessionmaker[Session],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 4)
    monkeypatch.setattr(segments, "MERGE_FAN_IN", 2)
    _one_row_segments(sessions, 9)
    names = _segment_names(sessions)
    assert len(names) <= 5 and any(name.count("_") == 2 for name in names), names
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TripletRow)) == 9


def _prepared_runs(session: Session, fragment: str) -> int:
    """How often this connection ran its prepared statements whose text holds ``fragment`` (0 on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return 0
    return session.scalar(select(func.coalesce(func.sum(text("generic_plans + custom_plans")), 0))
                          .select_from(text("pg_prepared_statements")).where(text("statement LIKE :fragment")),
                          {"fragment": f"%{fragment}%"})


def test_a_lookup_prepared_before_segments_open_and_merge_counts_and_reads_them_all(database_url: str) -> None:
    """A reader that commits keeps its prepared statements (models.db.read_sessions); the plans they
    cached name the segments of their time, and must follow the view through new segments and merges."""
    sessions = make_session_factory(database_url)
    reader = sessionmaker(create_engine(database_url), expire_on_commit=False)  # a connection of its own
    postgres = database_url.startswith("postgresql")

    def look_up() -> tuple[int, list[str], int]:
        with reader.begin() as session:
            page = find_triplets(session, TripletFilter(subject="张玲"), limit=None)
            return page.total, [record.object for record in page.items], _prepared_runs(session, "FROM triplets")

    documents = _one_row_segments(sessions, 2)
    for _ in range(6):  # psycopg prepares a statement on its fifth run
        total, objects, runs_before = look_up()
    assert (total, objects) == (2, ["剧0", "剧1"])
    assert runs_before > 0 or not postgres
    for number in range(2, 20):
        _record(sessions, _documents(sessions, 1)[0], Triplet("张玲", "作品", f"剧{number}"))
    with sessions.begin() as session:
        assert segments.compact(session, keep=3) == 1
    _record(sessions, documents[1], Triplet("张玲", "作品", "新剧"))  # replaced inside the merged segment
    total, objects, runs_after = look_up()
    assert len(_segment_names(sessions)) == 6  # the merged one, four left alone, one opened by the replacement
    assert (total, objects) == (20, ["剧0", *(f"剧{n}" for n in range(2, 20)), "新剧"])
    reader.kw["bind"].dispose()
    assert runs_after > runs_before or not postgres  # the same prepared statements answered


def test_a_document_stored_again_while_a_merge_copies_its_segment_keeps_only_its_new_rows(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a row deleted after the merge copied its segment must not come back with the copy."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's merge holds the store's one write lock: no writer runs beside it")
    sessions = make_session_factory(database_url)
    documents = _one_row_segments(sessions, 20)
    copied, go = threading.Event(), threading.Event()
    create_segment = segments.create_segment

    def copy_then_wait(connection, **kwargs):  # type: ignore[no-untyped-def]
        made = create_segment(connection, **kwargs)
        if kwargs.get("fill") is not None:  # the merged segment holds its copy; the old ones are not dropped yet
            copied.set()
            go.wait(timeout=60)
        return made

    def compact() -> None:
        with sessions.begin() as session:
            segments.compact(session, keep=3)

    monkeypatch.setattr(segments, "create_segment", copy_then_wait)
    compactor = threading.Thread(target=compact)
    compactor.start()
    assert copied.wait(timeout=60)
    writer = threading.Thread(target=_record, args=(sessions, documents[3], Triplet("张玲", "作品", "新剧")))
    writer.start()
    with sessions() as session:  # until the writer is done, or waits for the merge
        waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        deadline = time.monotonic() + 60
        while writer.is_alive() and not session.scalar(waiting) and time.monotonic() < deadline:
            session.rollback()
            time.sleep(0.01)
    go.set()
    compactor.join(timeout=60)
    writer.join(timeout=60)
    assert not compactor.is_alive() and not writer.is_alive()
    with sessions() as session:
        objects = [r.object for r in session.scalars(matching(TripletFilter(document_id=documents[3])))]
        assert session.scalar(select(func.count()).select_from(TripletRow)) == 20
    assert objects == ["新剧"]
