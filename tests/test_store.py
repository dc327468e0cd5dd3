"""Store functions against real SQLite and PostgreSQL, migrated by Alembic."""

from __future__ import annotations

import threading
import time

import pytest
from alembic import command
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models import claims, store
from models.migrate import alembic_config, current_revision, head_revision, upgrade
from models.tables import Document, Status, TripletRow
from models.triplet import Triplet
from models.triplet_query import TripletFilter, find_triplets

TEXT = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DIRECTOR = Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")
ACTOR = Triplet("娘家的故事第二部", "主演", "林在培", "影视作品", "人物")
EXTRACTOR = {"model": "tiny-glm", "adapter": "", "prompt_version": "v1"}


def _record(session: Session, doc_id: int, text: str, triplets: list[Triplet], **extractor: str) -> int:
    outcome = store.Outcome(doc_id, text, triplets)
    return store.record_outcomes(session, [outcome], **{**EXTRACTOR, **extractor}).triplets


def _job_with(sessions: sessionmaker[Session], *texts: str) -> tuple[int, list[int]]:
    with sessions.begin() as session:
        job = store.create_job(session, name="t")
        ids = store.add_documents(
            session, job_id=job.id, documents=[store.NewDocument(t, f"doc{i}") for i, t in enumerate(texts)]
        )
    return job.id, ids


def test_migration_reaches_head(database_url: str) -> None:
    assert current_revision(database_url) == head_revision(database_url) is not None


def test_duplicate_texts_in_a_job_are_skipped(sessions: sessionmaker[Session]) -> None:
    job_id, ids = _job_with(sessions, "a", "b", "a")
    assert len(ids) == 2
    with sessions.begin() as session:
        again = store.add_documents(session, job_id=job_id, documents=[store.NewDocument("b", "x")])
        other_job = store.create_job(session, name="other")
        elsewhere = store.add_documents(session, job_id=other_job.id, documents=[store.NewDocument("b", "x")])
    assert again == []
    assert len(elsewhere) == 1


def test_migration_0009_keeps_each_jobs_texts_known_across_it(sessions: sessionmaker[Session],
                                                                database_url: str) -> None:
    first_job, _ = _job_with(sessions, "a", "b")
    second_job, _ = _job_with(sessions, "b")
    command.downgrade(alembic_config(database_url), "0008")
    with sessions() as session:  # 0008 knew a job's texts by a unique index on the documents
        assert "job_texts" not in inspect(session.connection()).get_table_names()
        duplicate = {"job_id": first_job, "external_id": "x", "sha256": store.text_sha256("a"), "text": "a",
                     "status": "pending", "attempts": 0, "crashes_alone": 0, "has_triplets": False}
        with pytest.raises(IntegrityError):
            session.execute(insert(Document.__table__).values(**duplicate))
    upgrade(database_url)
    with sessions.begin() as session:
        def add(job_id: int, *texts: str) -> int:
            return len(store.add_documents(session, job_id=job_id, documents=[store.NewDocument(t, t) for t in texts]))

        assert (add(first_job, "a", "b"), add(second_job, "b"), add(second_job, "a", "c", "a")) == (0, 0, 2)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 5


def test_a_text_two_producers_add_to_a_job_at_once_is_kept_once(sessions: sessionmaker[Session],
                                                                 database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's writers take turns from their BEGIN: the second finds the text committed")
    job_id, _ = _job_with(sessions)
    first = sessions()
    first.begin()
    assert len(store.add_documents(first, job_id=job_id, documents=[store.NewDocument("x", "first")])) == 1
    added: list[int] = []

    def second() -> None:
        with sessions.begin() as session:
            added.extend(store.add_documents(session, job_id=job_id, documents=[
                store.NewDocument("x", "second"), store.NewDocument("y", "second")]))

    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 30
    with sessions() as watcher:  # the second waits for the first's uncommitted text
        while not watcher.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                      " AND wait_event_type = 'Lock'")):
            watcher.rollback()  # a transaction sees one snapshot of pg_stat_activity
            assert time.monotonic() < deadline and thread.is_alive(), "the second producer did not wait"
    first.commit()
    first.close()
    thread.join(timeout=30)
    with sessions() as session:
        kept = session.execute(select(Document.text, Document.external_id).where(Document.job_id == job_id)
                               .order_by(Document.id)).all()
    assert len(added) == 1 and [tuple(row) for row in kept] == [("x", "first"), ("y", "second")]


def test_added_documents_are_pending_with_their_fields_in_input_order(sessions: sessionmaker[Session]) -> None:
    texts = [TEXT, 'a "quoted"\nline, with a tab\t and a backslash \\', "第三篇"]
    long_id = "x" * 600
    with sessions.begin() as session:
        job = store.create_job(session, name="t")
        ids = store.add_documents(session, job_id=job.id, documents=[
            store.NewDocument(texts[0], "first"), store.NewDocument(texts[1], long_id),
            store.NewDocument(texts[0], "a copy"), store.NewDocument(texts[2], "third")])
    with sessions() as session:
        documents = [session.get(Document, doc_id) for doc_id in ids]
    assert ids == sorted(ids) and len(ids) == 3
    assert [d.text for d in documents] == texts
    assert [d.external_id for d in documents] == ["first", "x" * 500, "third"]
    assert [d.sha256 for d in documents] == [store.text_sha256(t) for t in texts]
    assert {(d.job_id, d.status, d.attempts, d.crashes_alone, d.has_triplets) for d in documents} == {
        (job.id, Status.pending, 0, 0, False)}
    assert all(d.created_at is not None for d in documents)


def test_recording_twice_leaves_one_copy(sessions: sessionmaker[Session]) -> None:
    _, (doc_id,) = _job_with(sessions, TEXT)
    for _ in range(2):
        with sessions.begin() as session:
            # the same triplet twice in one answer counts once as well
            assert _record(session, doc_id, TEXT, [DIRECTOR, ACTOR, DIRECTOR]) == 2
    with sessions() as session:
        rows = session.scalars(select(TripletRow).order_by(TripletRow.id)).all()
        document = session.get(Document, doc_id)
    assert [(r.subject, r.predicate, r.object) for r in rows] == [
        ("娘家的故事第二部", "导演", "张玲"),
        ("娘家的故事第二部", "主演", "林在培"),
    ]
    assert document is not None and document.status == Status.done and document.error is None
    assert (rows[0].subject_start, rows[0].subject_end) == (1, 9)
    assert TEXT[rows[0].object_start : rows[0].object_end] == "张玲"


def test_another_adapter_keeps_its_own_copy(sessions: sessionmaker[Session]) -> None:
    _, (doc_id,) = _job_with(sessions, TEXT)
    with sessions.begin() as session:
        _record(session, doc_id, TEXT, [DIRECTOR])
        _record(session, doc_id, TEXT, [DIRECTOR], adapter="lora-v2")
    with sessions() as session:
        adapters = session.scalars(select(TripletRow.adapter).order_by(TripletRow.adapter)).all()
    assert adapters == ["", "lora-v2"]


def test_failure_keeps_reason_and_raw_output(sessions: sessionmaker[Session]) -> None:
    job_id, (doc_id,) = _job_with(sessions, TEXT)
    with sessions.begin() as session:
        store.record_failure(session, document_id=doc_id, reason="unparseable output: no JSON", raw_output="抱歉")
    with sessions() as session:
        progress = store.job_progress(session, job_id=job_id)
        (failed,) = store.document_failures(session, job_id=job_id)
    assert progress.counts == {"pending": 0, "running": 0, "done": 0, "failed": 1}
    assert (failed.error, failed.raw_output) == ("unparseable output: no JSON", "抱歉")


def test_progress_rate_and_eta(sessions: sessionmaker[Session]) -> None:
    job_id, ids = _job_with(sessions, "a", "b", "c", "d")
    with sessions.begin() as session:
        claims.claim_documents(session, document_ids=ids[:2], owner="w", lease_seconds=60, max_attempts=3)
    with sessions.begin() as session:
        for doc_id in ids[:2]:
            _record(session, doc_id, "x", [])
    with sessions() as session:
        progress = store.job_progress(session, job_id=job_id)
    assert progress.counts["done"] == 2 and progress.unfinished == 2
    assert progress.docs_per_second is not None and progress.docs_per_second > 0
    assert progress.eta_seconds is not None and progress.eta_seconds > 0


def test_query_filters_exact_and_contains(sessions: sessionmaker[Session]) -> None:
    job_id, (doc_id,) = _job_with(sessions, TEXT)
    with sessions.begin() as session:
        _record(session, doc_id, TEXT, [DIRECTOR, ACTOR])
    with sessions() as session:
        def found(limit: int | None = 100, **filters: object) -> tuple[list[str], int]:
            page = find_triplets(session, TripletFilter(**filters), limit=limit)  # type: ignore[arg-type]
            return [record.object for record in page.items], page.total

        assert found(predicate="导演") == (["张玲"], 1)
        assert found(subject="娘家", contains=True) == (["张玲", "林在培"], 2)
        assert found(subject="娘家%") == ([], 0)  # % is literal, never a pattern
        assert found(object="张") == ([], 0)
        assert found(job_id=job_id, limit=1) == (["张玲"], 2)
        assert found(job_id=job_id + 1) == ([], 0)
        assert session.scalar(select(func.count()).select_from(TripletRow)) == 2


def test_a_group_of_outcomes_is_recorded_together_and_again_without_copies(sessions: sessionmaker[Session]) -> None:
    _, ids = _job_with(sessions, TEXT, "乱码", "空")
    rejected = [{"subject": "某人", "predicate": "导演", "object": "张玲", "reason": "subject not in the text"}]
    outcomes = [
        store.Outcome(ids[0], TEXT, [DIRECTOR, ACTOR, DIRECTOR], rejected=rejected, warning="window 2 failed"),
        store.Outcome(ids[1], "乱码", error="unparseable output: no JSON list in output", raw_output="抱歉"),
        store.Outcome(ids[2], "空"),
    ]
    for _ in range(2):  # a redelivered group replaces its rows
        with sessions.begin() as session:
            assert store.record_outcomes(session, outcomes, **EXTRACTOR).triplets == 2
    with sessions() as session:
        docs = {d.id: d for d in session.scalars(select(Document))}
        rows = session.scalars(select(TripletRow).order_by(TripletRow.id)).all()
    assert [(d.status, d.error, d.warning, d.raw_output, d.rejected) for d in (docs[i] for i in ids)] == [
        (Status.done, None, "window 2 failed", None, rejected),
        (Status.failed, "unparseable output: no JSON list in output", None, "抱歉", None),
        (Status.done, None, None, None, None),
    ]
    assert all(docs[i].finished_at is not None for i in ids)
    assert [(r.document_id, r.predicate, r.object, r.subject_start, r.object_start) for r in rows] == [
        (ids[0], "导演", "张玲", 1, TEXT.index("张玲")), (ids[0], "主演", "林在培", 1, TEXT.index("林在培"))]
