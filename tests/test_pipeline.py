"""The extraction pipeline without Celery: claim, extract, record."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import store
from models.errors import ModelError, StoreUnavailableError
from models.tables import Document, Status, TripletRow
from tests.fakes import ScriptedEngine
from worker.pipeline import process_documents

GOOD = '[{"subject":"娘家的故事第二部","subject_type":"影视作品","predicate":"导演","object":"张玲","object_type":"人物"}]'
TEXT = "《娘家的故事第二部》是张玲执导"


def _submit(sessions: sessionmaker[Session], *texts: str) -> list[int]:
    with sessions.begin() as session:
        job = store.create_job(session, name="t")
        return store.add_documents(
            session, job_id=job.id, documents=[store.NewDocument(t, str(i)) for i, t in enumerate(texts)]
        )


def test_every_document_ends_done_or_failed_with_reason(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, TEXT, "乱码", "空")
    answers = {TEXT: GOOD, "乱码": "I cannot help with that", "空": "[]"}
    report = process_documents(ids, engine=ScriptedEngine(answers.__getitem__), sessions=sessions, max_attempts=3)
    assert report.as_dict() == {"claimed": 3, "done": 2, "failed": 1, "triplets": 1}
    with sessions() as session:
        docs = {d.text: d for d in session.scalars(select(Document))}
    assert docs[TEXT].status == Status.done
    assert docs["空"].status == Status.done
    assert docs["乱码"].status == Status.failed
    assert docs["乱码"].error == "unparseable output: no JSON list in output"
    assert docs["乱码"].raw_output == "I cannot help with that"


def test_redelivered_group_repeats_no_work(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, TEXT)
    engine = ScriptedEngine(lambda text: GOOD)
    process_documents(ids, engine=engine, sessions=sessions, max_attempts=3)
    second = process_documents(ids, engine=engine, sessions=sessions, max_attempts=3)
    assert second.claimed == 0 and len(engine.batches) == 1
    with sessions() as session:
        assert len(session.scalars(select(TripletRow)).all()) == 1


def test_engine_failure_fails_the_group_with_its_reason(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, "a", "b")

    def broken(text: str) -> str:
        raise ModelError("cannot load model from /nowhere: missing config.json")

    report = process_documents(ids, engine=ScriptedEngine(broken), sessions=sessions, max_attempts=3)
    assert report.failed == 2
    with sessions() as session:
        errors = {d.error for d in session.scalars(select(Document))}
    assert errors == {"cannot load model from /nowhere: missing config.json"}


def test_unreachable_database_is_retryable() -> None:
    from models.db import make_session_factory

    sessions = make_session_factory("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(StoreUnavailableError):
        process_documents([1], engine=ScriptedEngine(lambda t: "[]"), sessions=sessions, max_attempts=3)


def test_only_grounded_schema_triplets_are_stored(sessions: sessionmaker[Session]) -> None:
    (doc_id,) = _submit(sessions, TEXT)
    answer = (
        '[{"subject":"娘家的故事第二部","predicate":"导演","object":"张玲"},'
        '{"subject":"娘家的故事第二部","predicate":"导演","object":"张艺谋"},'
        '{"subject":"娘家的故事第二部","predicate":"拍摄于","object":"张玲"},'
        '{"subject":"《娘家的故事第二部》","predicate":"主演","object":"张玲"}]'
    )
    report = process_documents([doc_id], engine=ScriptedEngine(lambda t: answer), sessions=sessions, max_attempts=3)
    assert report.triplets == 2
    with sessions() as session:
        rows = session.scalars(select(TripletRow)).all()
        document = session.get(Document, doc_id)
    assert {(r.subject, r.predicate, r.object, r.subject_type, r.object_type) for r in rows} == {
        ("娘家的故事第二部", "导演", "张玲", "影视作品", "人物"),
        ("娘家的故事第二部", "主演", "张玲", "影视作品", "人物"),
    }
    assert all(r.subject in TEXT and r.object in TEXT for r in rows)
    assert document is not None and document.status == Status.done
    assert [(r["object"], r["reason"]) for r in document.rejected or []] == [
        ("张艺谋", "object '张艺谋' not in the text"),
        ("张玲", "predicate '拍摄于' not in schema duie2"),
    ]


def test_a_result_the_store_refuses_fails_that_document_alone(sessions: sessionmaker[Session]) -> None:
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite stores NUL bytes; PostgreSQL refuses them")
    ids = _submit(sessions, TEXT, "坏")
    answers = {TEXT: GOOD, "坏": "no JSON here \x00"}  # a failure whose raw output PostgreSQL cannot hold
    report = process_documents(ids, engine=ScriptedEngine(answers.__getitem__), sessions=sessions, max_attempts=3)
    assert report.as_dict() == {"claimed": 2, "done": 1, "failed": 1, "triplets": 1}
    with sessions() as session:
        docs = {d.text: d for d in session.scalars(select(Document))}
    assert docs[TEXT].status == Status.done
    assert docs["坏"].status == Status.failed
    assert docs["坏"].error.startswith("the store refused the result: ") and "NUL" in docs["坏"].error
