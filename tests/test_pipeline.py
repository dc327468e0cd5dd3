"""The extraction pipeline without Celery: claim, extract, record; each failure charged to whoever caused it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import registry, store, workers
from models.errors import ModelError, WorkerFault
from models.settings import load_settings
from models.tables import Adapter, Document, Status, TripletRow, utcnow
from tests.fakes import ScriptedEngine
from worker.engine import CANARY_TEXT
from worker.pipeline import AdapterFollower, process_documents

GOOD = '[{"subject":"娘家的故事第二部","subject_type":"影视作品","predicate":"导演","object":"张玲","object_type":"人物"}]'
TEXT = "《娘家的故事第二部》是张玲执导"
SETTINGS = load_settings()
OWNER = "worker-1"


def _submit(sessions: sessionmaker[Session], *texts: str) -> list[int]:
    with sessions.begin() as session:
        workers.register_worker(session, worker_id=OWNER, hostname="h", pid=1, queue="extract", device="cpu")
        job = store.create_job(session, name="t")
        return store.add_documents(
            session, job_id=job.id, documents=[store.NewDocument(t, str(i)) for i, t in enumerate(texts)]
        )


def _process(ids: list[int], engine: ScriptedEngine, sessions: sessionmaker[Session], resent: list | None = None):
    return process_documents(ids, engine=engine, sessions=sessions, settings=SETTINGS, owner=OWNER,
                             resend=(resent if resent is not None else []).append)


def _promote(session: Session, name: str, version: int) -> None:
    """Promoted as the registry records it (the CLI's folder checks are tested with the registry)."""
    session.execute(update(Adapter).where(Adapter.name == name, Adapter.version == version)
                    .values(promoted_at=utcnow()))


def _documents(sessions: sessionmaker[Session]) -> dict[str, Document]:
    with sessions() as session:
        return {d.text: d for d in session.scalars(select(Document))}


def test_every_document_ends_done_or_failed_with_reason(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, TEXT, "乱码", "空")
    answers = {TEXT: GOOD, "乱码": "I cannot help with that", "空": "[]"}
    report = _process(ids, ScriptedEngine(answers.__getitem__), sessions)
    assert asdict(report) == {"claimed": 3, "done": 2, "failed": 1, "triplets": 1, "resent": 0, "skipped": 0,
                              "failed_at_claim": 0, "warnings": 0}
    docs = _documents(sessions)
    assert docs[TEXT].status == Status.done
    assert docs["空"].status == Status.done
    assert docs["乱码"].status == Status.failed
    assert docs["乱码"].error == "unparseable output: no JSON list in output"
    assert docs["乱码"].raw_output == "I cannot help with that"


def test_redelivered_group_repeats_no_work(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, TEXT)
    engine = ScriptedEngine(lambda text: GOOD)
    _process(ids, engine, sessions)
    second = _process(ids, engine, sessions)
    assert second.claimed == 0 and len(engine.batches) == 1
    with sessions() as session:
        assert len(session.scalars(select(TripletRow)).all()) == 1


def test_a_broken_engine_is_the_workers_fault_and_charges_no_document(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, "a", "b")

    def broken(text: str) -> str:
        raise ModelError("cannot load adapter duie:3 from /adapters/duie/3: missing adapter_config.json")

    with pytest.raises(WorkerFault, match="missing adapter_config.json"):
        _process(ids, ScriptedEngine(broken), sessions)
    assert {(d.status, d.crashes_alone, d.owner, d.error) for d in _documents(sessions).values()} == {
        (Status.pending, 0, None, None)}


def test_an_engine_that_fails_everything_even_the_canary_charges_no_document(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, "a", "b", "c")

    def lost_device(text: str) -> str:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(WorkerFault, match="canary sentence fails too"):
        _process(ids, ScriptedEngine(lost_device), sessions)
    assert {d.status for d in _documents(sessions).values()} == {Status.pending}


def test_an_engine_error_on_one_document_fails_that_document_alone(sessions: sessionmaker[Session]) -> None:
    ids = _submit(sessions, TEXT, "毒", "空")

    def answer(text: str) -> str:
        if text == "毒":
            raise IndexError("index 70000 is out of bounds for dimension 0 with size 65024")
        return GOOD if text == TEXT else "[]"

    engine = ScriptedEngine(answer)
    report = _process(ids, engine, sessions)
    assert (report.done, report.failed) == (2, 1)
    docs = _documents(sessions)
    assert docs["毒"].error == ("the engine failed on this document: IndexError: "
                                "index 70000 is out of bounds for dimension 0 with size 65024")
    assert docs[TEXT].status == docs["空"].status == Status.done
    assert [CANARY_TEXT] in engine.batches  # the engine's health was checked before blaming the document


def test_a_document_that_breaks_the_engine_ends_alone_and_failed_and_charges_no_other(
    sessions: sessionmaker[Session]
) -> None:
    texts = ["甲", "乙", "毒", "丙", "丁", "戊"]
    ids = _submit(sessions, *texts)

    class BreakableEngine(ScriptedEngine):
        """Reading 毒 breaks it for good (a device-side assert stands in): a restart brings a new one."""

        broken = False

        def extract(self, texts, *, progress=lambda: None, finished=None):  # type: ignore[no-untyped-def]
            if self.broken or "毒" in texts:
                self.broken = True
                raise RuntimeError("CUDA error: device-side assert triggered")
            return super().extract(texts, progress=progress)

    queue, restarts = [ids], 0
    while queue and restarts < 20:
        message = queue.pop(0)
        try:  # the worker process: a fresh engine after each restart
            process_documents(message, engine=BreakableEngine(lambda text: "[]"), sessions=sessions,
                              settings=SETTINGS.model_copy(update={"max_attempts": 2}), owner=OWNER,
                              resend=queue.append)
        except WorkerFault:
            restarts += 1
            queue.append(message)  # the message goes back to the queue
    docs = _documents(sessions)
    assert not queue and restarts < 20
    assert docs["毒"].status == Status.failed and docs["毒"].error.startswith("its worker died 2 times")
    assert {docs[text].status for text in texts if text != "毒"} == {Status.done}


def test_unreachable_database_waits_then_gives_the_work_back() -> None:
    from models.db import make_session_factory
    from worker.store_retry import StoreRetry

    sessions = make_session_factory("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=1")
    slept: list[float] = []
    retry = StoreRetry(sessions, patience_s=0.0, sleep=slept.append)
    with pytest.raises(WorkerFault, match="database unreachable for") as caught:
        process_documents([1], engine=ScriptedEngine(lambda t: "[]"), sessions=sessions, settings=SETTINGS,
                          owner=OWNER, resend=lambda ids: None, retry=retry)
    assert "secret" not in str(caught.value)


def test_only_grounded_schema_triplets_are_stored(sessions: sessionmaker[Session]) -> None:
    (doc_id,) = _submit(sessions, TEXT)
    answer = (
        '[{"subject":"娘家的故事第二部","predicate":"导演","object":"张玲"},'
        '{"subject":"娘家的故事第二部","predicate":"导演","object":"张艺谋"},'
        '{"subject":"娘家的故事第二部","predicate":"拍摄于","object":"张玲"},'
        '{"subject":"《娘家的故事第二部》","predicate":"主演","object":"张玲"}]'
    )
    report = _process([doc_id], ScriptedEngine(lambda t: answer), sessions)
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
    report = _process(ids, ScriptedEngine(answers.__getitem__), sessions)
    assert (report.claimed, report.done, report.failed, report.triplets) == (2, 1, 1, 1)
    docs = _documents(sessions)
    assert docs[TEXT].status == Status.done
    assert docs["坏"].status == Status.failed
    assert docs["坏"].error.startswith("the store refused the result: ") and "NUL" in docs["坏"].error


def test_the_promoted_adapter_is_followed_and_a_bad_one_keeps_the_last_good(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    engine = ScriptedEngine(lambda text: "[]")
    engine.model_id = registry.model_key(tmp_path / "base")
    follower = AdapterFollower(load_settings(adapter_registry=tmp_path / "adapters"))
    follower.follow(engine, sessions)
    assert engine.adapter_id == ""
    with sessions.begin() as session:
        for version in (1, 2):
            folder = tmp_path / "adapters" / "duie" / f"job-{version}"
            folder.mkdir(parents=True)
            for name in ("adapter_config.json", "adapter_model.safetensors"):  # names are what is checked here
                (folder / name).write_text("{}")
            registry.register_adapter(session, name="duie", path=f"duie/job-{version}", base_model=engine.model_id,
                                      metrics={}, config={})
        _promote(session, "duie", 1)
    follower.follow(engine, sessions)
    assert (engine.adapter_id, engine.adapter_path) == ("duie:1", (tmp_path / "adapters/duie/job-1").resolve())

    def refuse(adapter_id: str, path: Path) -> None:
        raise ModelError(f"cannot load adapter {adapter_id} from {path}: no adapter_model.safetensors")

    engine.use_adapter = refuse  # type: ignore[method-assign]
    with sessions.begin() as session:
        _promote(session, "duie", 2)
    follower.follow(engine, sessions)
    with pytest.raises(ModelError, match="no adapter_model.safetensors"):
        follower.follow(engine, sessions, strict=True)  # a worker starting up refuses to work with it
    assert engine.adapter_id == "duie:1"
